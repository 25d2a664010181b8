"""English Wikipedia from the TFDS catalogue (`wikipedia/20230601.en`, prepared as
ArrayRecord on a TPU VM), with a 30522-piece tokenizer trained on it (`python -m
ssl_jax.data.text wikipedia/20230601.en --vocab_size 30522`). It has no labels, so only
the language-model metrics apply."""
from ssl_jax.data.presets import _sections


def data_config(**overrides):
  return _sections.text("wikipedia/20230601.en", features=("text",), label_key="",
                        tokenizer="wordpiece_30522", vocab_size=30522, **overrides)
