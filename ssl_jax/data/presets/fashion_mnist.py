"""Fashion-MNIST: 28x28 grey clothing images, 10 classes; built offline from the Debian IDX
files (data/builders/fashion_mnist_local.py)."""
from ssl_jax.data.presets import _sections

TRAIN_EXAMPLES = 60_000


def data_config(**overrides):
  return _sections.image("fashion_mnist", image_size=28, mean=(0.2860,), std=(0.3530,),
                         **overrides)
