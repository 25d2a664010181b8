"""photo_crops: colour 32x32 crops of three sample photographs, built offline
(data/builders/photo_crops.py)."""
from ssl_jax.data.presets import _sections

TRAIN_EXAMPLES = 6_000


def data_config(**overrides):
  return _sections.image("photo_crops", image_size=32, mean=(0.4180, 0.3749, 0.3354),
                         std=(0.3557, 0.2884, 0.2869), **overrides)
