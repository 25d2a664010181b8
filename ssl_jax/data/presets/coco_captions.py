"""COCO captions from the TFDS catalogue (prepared as ArrayRecord on a TPU VM): its
`captions/text`, first caption; images fitted to 256 on the host; a tokenizer trained on
the captions. CLIP's context length is 77."""
from ssl_jax.data.presets import _sections


def data_config(**overrides):
  return _sections.image_text(
      "coco_captions", features=("image", "captions"), label_key="", host_resize=256,
      image_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
      text_key="captions", tokenizer="wordpiece_32768", vocab_size=32768, max_length=77,
      **overrides)
