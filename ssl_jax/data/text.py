"""Text on the host: a WordPiece tokenizer trained offline, and tokenisation in the loader.

    python -m ssl_jax.data.text fortunes --vocab_size 8192      # train split only
    python -m ssl_jax.data.text wikipedia/20230601.en --feature text --vocab_size 30522

A tokenizer is trained with HF `tokenizers` on one split of a prepared TFDS text dataset
(BERT's normaliser: lower case, accents stripped, control characters removed; BERT's
pre-tokeniser: whitespace and punctuation; WordPiece) and saved beside the prepared
data as `DATA_DIR/<builder>/tokenizers/<name>.json`, named `wordpiece_<vocab size>`
unless told otherwise, so a config loads it by (dataset, name). Special tokens, with
fixed ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.

Tokenisation happens in the loader's host preprocess (`Tokenize`), never in the jitted
step: a record's text becomes `tokens`, int32 [max_length]: [CLS] pieces [SEP], cut to
max_length (the last piece is [SEP] still) and padded with [PAD].
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ssl_jax.core import paths
from ssl_jax.core.errors import DataNotPreparedError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIAL_TOKENS))


def _tokenizers():
  try:
    import tokenizers  # pylint: disable=import-outside-toplevel
  except ImportError as error:  # pragma: no cover - installed by setup.py
    raise ImportError("text needs HF tokenizers: pip install 'tokenizers>=0.23,<0.24'") from error
  return tokenizers


def tokenizer_path(dataset: str, name: str, data_dir: str | None = None) -> str:
  from ssl_jax.data import sources  # pylint: disable=import-outside-toplevel
  builder = sources.resolve_name(dataset).split(":")[0].split("/")[0]
  return paths.join(sources.resolve_data_dir(data_dir), builder, "tokenizers", f"{name}.json")


def new_tokenizer():
  """An untrained WordPiece tokenizer with BERT's normaliser and pre-tokeniser."""
  tk = _tokenizers()
  tokenizer = tk.Tokenizer(tk.models.WordPiece(unk_token="[UNK]"))
  tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = tk.decoders.WordPiece(cleanup=False)  # pieces back to words exactly
  return tokenizer


def train_tokenizer(texts, vocab_size: int, path: str | None = None):
  """Trains WordPiece on an iterable of strings; saves to `path` if given."""
  tk = _tokenizers()
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"vocab_size={vocab_size} leaves no room beside {len(SPECIAL_TOKENS)} special tokens")
  tokenizer = new_tokenizer()
  trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                         show_progress=False)
  tokenizer.train_from_iterator(texts, trainer)
  for index, token in enumerate(SPECIAL_TOKENS):
    assert tokenizer.token_to_id(token) == index, (token, tokenizer.token_to_id(token))
  if path:
    paths.makedirs(paths.dirname(path))
    paths.write_text(path, tokenizer.to_str())
  return tokenizer


TRAIN_TOKENIZER = "python -m ssl_jax.data.text DATASET --vocab_size N [--data_dir D]"


def load_tokenizer(path: str):
  if not paths.exists(path):
    raise DataNotPreparedError(f"no tokenizer at {path}; train it once on the prepared "
                               f"dataset with: {TRAIN_TOKENIZER}")
  try:
    return _tokenizers().Tokenizer.from_str(paths.read_text(path))
  except Exception as error:  # the tokenizers library's own error for an unreadable file
    raise DataNotPreparedError(f"the tokenizer file {path} cannot be read "
                               f"({str(error).splitlines()[0][:200]}); train it again with: "
                               f"{TRAIN_TOKENIZER}") from None


def decode_text(value) -> str:
  """A record's text feature as a str: bytes are UTF-8; of several texts (a sequence, or
  a feature dict with "text" as TFDS's coco_captions has) the first is taken."""
  if isinstance(value, dict):
    value = value["text"]
  if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim):
    value = value[0]
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def encode(tokenizer, text: str, max_length: int) -> np.ndarray:
  """int32 [max_length]: [CLS] pieces [SEP], truncated (keeping the [SEP]) and padded."""
  if max_length < 2:
    raise ValueError(f"max_length={max_length}: needs room for [CLS] and [SEP]")
  pieces = tokenizer.encode(text, add_special_tokens=False).ids[:max_length - 2]
  out = np.full((max_length,), PAD, np.int32)
  out[:len(pieces) + 2] = [CLS, *pieces, SEP]
  return out


class Tokenize:
  """Host preprocess: record[feature] (text) -> record["tokens"] (encode), feature dropped.
  Picklable: the tokenizer file is opened in the process that first uses it."""

  def __init__(self, path: str, max_length: int, feature: str = "text"):
    self.path, self.max_length, self.feature = path, int(max_length), feature
    self._tokenizer = None

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None}

  def __call__(self, record: dict) -> dict:
    if self._tokenizer is None:
      self._tokenizer = load_tokenizer(self.path)
    out = {k: v for k, v in record.items() if k != self.feature}
    out["tokens"] = encode(self._tokenizer, decode_text(record[self.feature]), self.max_length)
    return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ssl_jax.data.text", description=(
      "Train a WordPiece tokenizer on one split of a prepared TFDS text dataset and save "
      "it beside the prepared data."))
  parser.add_argument("dataset", help="a prepared TFDS text dataset, e.g. fortunes")
  parser.add_argument("--vocab_size", type=int, default=8192)
  parser.add_argument("--feature", default="text", help="the record's text feature")
  parser.add_argument("--split", default="train", help="split trained on (never test)")
  parser.add_argument("--name", default=None, help="default: wordpiece_<vocab_size>")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--force", action="store_true", help="retrain over an existing one")
  args = parser.parse_args(argv)
  from ssl_jax.data import sources  # pylint: disable=import-outside-toplevel
  path = tokenizer_path(args.dataset, args.name or f"wordpiece_{args.vocab_size}", args.data_dir)
  if paths.exists(path) and not args.force:
    print(f"{args.dataset}: {path} exists; nothing to do (--force retrains it).", flush=True)
    return 0
  source = sources.get_source(args.dataset, args.split, args.data_dir)
  start = time.perf_counter()
  print(f"{args.dataset}: training a {args.vocab_size}-piece WordPiece tokenizer on "
        f"{len(source)} records of {args.split!r} ...", flush=True)
  train_tokenizer((decode_text(source[i][args.feature]) for i in range(len(source))),
                  args.vocab_size, path)
  print(f"{args.dataset}: wrote {path} in {time.perf_counter() - start:.1f}s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())


# ----------------------------------------------------------------------------- on device

def default_max_predictions(max_length: int, rate: float) -> int:
  """Prediction slots per sequence: ceil(rate x max_length) (BERT's 20 for 128 at 15%)."""
  import math  # pylint: disable=import-outside-toplevel
  return max(1, min(max_length, math.ceil(rate * max_length - 1e-9)))


def mask_tokens(tokens, rng, vocab_size: int, rate: float = 0.15, mask_fraction: float = 0.8,
                random_fraction: float = 0.1, max_predictions: int | None = None):
  """BERT's masking as its pretraining data were made (Devlin et al. 2019, section 3.1;
  google-research/bert create_pretraining_data.py), jit-able: in each sequence,
  n = min(max_predictions, max(1, round(rate x m))) of its m ordinary tokens (not [PAD],
  [UNK], [CLS], [SEP], [MASK]) are chosen uniformly at random; a chosen token becomes
  [MASK] with probability `mask_fraction`, a random ordinary token with
  `random_fraction`, and stays itself otherwise. Example i draws from
  `jax.random.split(rng, B)[i]`, so the draw does not depend on sharding.

  Returns (inputs int32 [B, L], positions int32 [B, K], weights bool [B, K]): the K =
  max_predictions (default_max_predictions) slots name the chosen positions (weights
  True) and then unchosen ones (False). The loss predicts at the K slots only, as BERT
  does (its `max_predictions_per_seq`), not at all L positions.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  length = tokens.shape[1]
  slots = max_predictions or default_max_predictions(length, rate)
  if not 1 <= slots <= length:
    raise ValueError(f"max_predictions={slots} must be in [1, {length}]")

  def one(row, key):
    choose_key, kind_key, random_key = jax.random.split(key, 3)
    ordinary = row >= len(SPECIAL_TOKENS)
    count = jnp.sum(ordinary)
    wanted = jnp.minimum(slots, jnp.maximum(1, jnp.round(rate * count))).astype(jnp.int32)
    # Ordinary positions first, in a random order: the `wanted` first of the top `slots`.
    score = jnp.where(ordinary, jax.random.uniform(choose_key, row.shape), 2.0)
    _, positions = jax.lax.top_k(-score, slots)
    weights = (jnp.arange(slots) < wanted) & ordinary[positions]
    kind = jax.random.uniform(kind_key, (slots,))
    random_ids = jax.random.randint(random_key, (slots,), len(SPECIAL_TOKENS), vocab_size,
                                    dtype=row.dtype)
    original = row[positions]
    replaced = jnp.where(kind < mask_fraction, jnp.asarray(MASK, row.dtype),
                         jnp.where(kind < mask_fraction + random_fraction, random_ids, original))
    inputs = row.at[positions].set(jnp.where(weights, replaced, original))
    return inputs, positions.astype(jnp.int32), weights

  return jax.vmap(one)(tokens, jax.random.split(rng, tokens.shape[0]))
