"""ImageNet-1k from the TFDS catalogue (prepared as ArrayRecord on a TPU VM): images of
varying size, decoded and fitted to 256 on the host, evaluated at 224."""
from ssl_jax.data.presets import _sections

TRAIN_EXAMPLES = 1_281_167


def data_config(**overrides):
  return _sections.image("imagenet2012", host_resize=256, image_size=224,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), **overrides)
