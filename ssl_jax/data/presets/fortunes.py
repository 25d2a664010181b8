"""fortunes: Debian's fortune files as labelled English text (data/builders/fortunes.py),
with the 8192-piece WordPiece tokenizer trained on its train split (scripts/setup.sh)."""
from ssl_jax.data.presets import _sections

TRAIN_EXAMPLES = 13_571


def data_config(**overrides):
  return _sections.text("fortunes", features=("text", "category"), label_key="category",
                        tokenizer="wordpiece_8192", vocab_size=8192, **overrides)
