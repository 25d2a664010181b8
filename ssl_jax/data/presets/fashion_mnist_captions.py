"""fashion_mnist_captions: Fashion-MNIST images with templated captions, CLIP's offline
functional test set (data/builders/fashion_mnist_captions.py), with a 256-piece tokenizer
trained on its train captions (scripts/setup.sh)."""
from ssl_jax.data.presets import _sections


def data_config(**overrides):
  return _sections.image_text(
      "fashion_mnist_captions", features=("image", "label", "caption"), label_key="label",
      host_resize=0, image_size=28, mean=(0.2860,), std=(0.3530,), text_key="caption",
      tokenizer="wordpiece_256", vocab_size=256, max_length=16, **overrides)
