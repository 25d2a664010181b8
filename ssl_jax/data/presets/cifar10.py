"""CIFAR-10 from the TFDS catalogue (prepared as ArrayRecord on a machine with a network)."""
from ssl_jax.data.presets import _sections

TRAIN_EXAMPLES = 50_000


def data_config(**overrides):
  return _sections.image("cifar10", image_size=32, mean=(0.4914, 0.4822, 0.4465),
                         std=(0.2470, 0.2435, 0.2616), **overrides)
