"""Moving Fashion-MNIST: 8-frame videos of one Fashion-MNIST item bouncing in a 48x48
canvas, labelled with the item's class; built offline from the Debian IDX files
(data/builders/moving_fashion_mnist.py)."""
from ssl_jax.data.presets import _sections

TRAIN_EXAMPLES = 10_000


def data_config(**overrides):
  # Mean and std of every pixel of every train frame (mostly black canvas).
  return _sections.video("moving_fashion_mnist", frames=8, image_size=48, mean=(0.0974,),
                         std=(0.2471,), **overrides)
