"""How texts become pretraining sequences: `config.data.layout`.

    single          one text per sequence: [CLS] pieces [SEP], padded (text.Tokenize).
    packed          RoBERTa's FULL-SENTENCES packing (Liu et al. 2019, section 4.2), with
                    attention kept inside each text: several texts per sequence, each
                    [CLS] pieces [SEP] with its positions counted from 0, and `segments`
                    (1, 2, ... per text, 0 on padding) so that no text attends to another.
                    Each text is then computed exactly as it would be alone; the step
                    stops spending its work on padding.
    packed_across   the same sequences with attention across the texts and positions
                    running through the whole sequence, as RoBERTa packs (its texts are
                    consecutive sentences of one document; here they are unrelated texts).
    nsp_pairs       BERT's next-sentence prediction (Devlin et al. 2019, section 3.1):
                    [CLS] A [SEP] B [SEP] with `token_types` 0 on [CLS] A [SEP] and 1 on
                    B [SEP]; B continues A in the same text (`pair_label` 1) half of the
                    time, else it is the second half of another record's text (0).
    sop_pairs       ALBERT's sentence-order prediction (Lan et al. 2020, section 3.1): the
                    same two segments of one text, in order (1) or swapped (0).

Only training and the held-out objective read these layouts (`training_source`); the
probes, fine-tuning and zero-shot read one text per sequence, as users' downstream tasks do.

Splitting a text into A and B: at a sentence boundary (after . ! ? and any closing quote
or bracket, at a blank line, or before an attribution line starting with "--"), chosen
uniformly among the boundaries; a text of one sentence is split at a word boundary
instead; a text of one word cannot be split, and its record's pair is built from the next
splittable record. A and B are cut to fit max_length - 3 pieces from the outside in (A
loses its first pieces, B its last), so the junction the task is about is kept. Every
choice is a function of (seed, record index): the same record gives the same pair in every
epoch and on every host, so a resumed run sees the same stream.

Packing: the split's records are put in a seeded random order (a source stored class by
class would otherwise fill sequences with one class), every text is cut into units of at
most max_length - 2 pieces (a long text fills several units rather than losing its tail),
and units are placed first-fit into the open sequences (up to PACK_OPEN at once). This
tokenises the whole split once when the loader is built, with a progress line: about a
second for fortunes' 13.5k texts, and proportionally more for a large corpus.
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from ssl_jax.core.errors import ConfigError
from ssl_jax.data import pipeline, preprocess, sources, text

LAYOUTS = ("single", "packed", "packed_across", "nsp_pairs", "sop_pairs")
PAIR_LAYOUTS = ("nsp_pairs", "sop_pairs")
PACKED_LAYOUTS = ("packed", "packed_across")
PACK_OPEN = 64  # sequences open for first-fit packing at once

# After . ! ? (and closing quotes or brackets), before whitespace; a blank line; a line
# break before an attribution ("-- Mark Twain").
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*(?=\s)|\n[ \t]*\n|\n(?=[ \t]*--)")


def layout(data: ml_collections.ConfigDict) -> str:
  return data.get("layout", "single")


def check_config(data: ml_collections.ConfigDict) -> None:
  """ConfigError for a layout that is unknown or that the data cannot give."""
  name = layout(data)
  if name not in LAYOUTS:
    raise ConfigError(f"data.layout={name!r}; expected one of {LAYOUTS}")
  if name != "single" and (data.get("modality") != "text" or not data.get("tokenizer")):
    raise ConfigError(f"data.layout={name!r} packs or pairs tokenised text: it needs a text "
                      "dataset with data.tokenizer (data.modality='text')")
  if name in PAIR_LAYOUTS and data.max_length < 5:
    raise ConfigError(f"data.layout={name!r} needs data.max_length >= 5 ([CLS] A [SEP] B "
                      f"[SEP]), not {data.max_length}")


def keys(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The features of a training batch after the host work."""
  name = layout(data)
  if name == "single":
    return tuple(data.features)
  return {"packed": ("tokens", "segments", "positions"), "packed_across": ("tokens",),
          "nsp_pairs": ("tokens", "token_types", "pair_label"),
          "sop_pairs": ("tokens", "token_types", "pair_label")}[name]


def placeholder_example(data: ml_collections.ConfigDict) -> dict[str, np.ndarray] | None:
  """A zero batch of one in the layout's shapes, or None for `single` (the caller's)."""
  if layout(data) == "single":
    return None
  length = (1, data.max_length)
  return {key: np.zeros((1,) if key == "pair_label" else length, np.int32)
          for key in keys(data)}


def training_source(data: ml_collections.ConfigDict, split: str, seed: int,
                    first: int | None = None, log=print
                    ) -> tuple[Sequence[Any], tuple[str, ...], pipeline.Preprocess | None]:
  """(source, keys, preprocess) for pretraining on `split` in the data's layout; of its
  `first` records only, if given (an init example need not pack a whole corpus)."""
  check_config(data)
  base = sources.get_source(data.name, split, data.get("data_dir"))
  if first is not None:
    base = pipeline.Subset(base, range(min(first, len(base))), f"first {first}")
  name = layout(data)
  if name == "single":
    return base, keys(data), preprocess.from_config(data)
  path = text.tokenizer_path(data.name, data.tokenizer, data.get("data_dir"))
  text_key = data.get("text_key", "text")
  if name in PACKED_LAYOUTS:
    source = PackedTexts(base, path, data.max_length, seed, text_key,
                         within=name == "packed", description=f"{data.name}[{split}]", log=log)
  else:
    source = SentencePairs(base, path, data.max_length, seed, text_key,
                           task=name.split("_")[0])
  return source, keys(data), None


# ------------------------------------------------------------------------- sentence pairs

def split_sentences(value: str) -> list[str]:
  """The text's sentences (see the module docstring), stripped, empty ones dropped."""
  pieces, start = [], 0
  for match in _BOUNDARY.finditer(value):
    pieces.append(value[start:match.end()])
    start = match.end()
  pieces.append(value[start:])
  return [p.strip() for p in pieces if p.strip()]


def halves(value: str, rng: np.random.Generator) -> tuple[str, str] | None:
  """(A, B): the text cut at a random sentence boundary, else a random word boundary;
  None for a text of one word."""
  for units, joiner in ((split_sentences(value), "\n"), (value.split(), " ")):
    if len(units) >= 2:
      cut = int(rng.integers(1, len(units)))
      return joiner.join(units[:cut]), joiner.join(units[cut:])
  return None


def fit_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
  """A and B cut to at most `budget` pieces together: the longer one loses a piece at a
  time, A from its start, B from its end (the junction stays)."""
  drop_a = drop_b = 0
  while len(a) - drop_a + len(b) - drop_b > budget:
    if len(a) - drop_a > len(b) - drop_b:
      drop_a += 1
    else:
      drop_b += 1
  return a[drop_a:], b[:len(b) - drop_b]


class SentencePairs(Sequence):
  """Record i of `source` as a BERT sentence pair (module docstring): a random-access
  source of {"tokens", "token_types", "pair_label"}. Picklable for loader workers."""

  def __init__(self, source: Sequence[Any], tokenizer_path: str, max_length: int, seed: int,
               text_key: str = "text", task: str = "nsp"):
    if task not in ("nsp", "sop"):
      raise ValueError(f"task={task!r}: nsp or sop")
    if len(source) < 2:
      raise ConfigError(f"sentence pairs need at least 2 records, the split has {len(source)}")
    self.source, self.tokenizer_path, self.max_length = source, tokenizer_path, int(max_length)
    self.seed, self.text_key, self.task = int(seed), text_key, task
    self._tokenizer = None

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None}

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:  # grain compares it when an iterator state is restored
    return f"SentencePairs({self.source!r}, {self.task}, {self.max_length}, seed {self.seed})"

  def _rng(self, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng((self.seed, int(index), purpose))

  def record_text(self, index: int, read: dict | None = None) -> str:
    """Record `index`'s text, from `read` ({index: text} read ahead) if it is there."""
    if read is not None and int(index) in read:
      return read[int(index)]
    return text.decode_text(self.source[int(index)][self.text_key])

  def _negative(self, index: int, home: int) -> int:
    """The record an NSP negative of `index` (cut from `home`) takes its B from: any but home."""
    count = len(self)
    return (home + 1 + int(self._rng(index, 2).integers(0, count - 1))) % count

  def plan(self, index: int, read: dict | None = None) -> dict:
    """What record `index` becomes, as text: {"label", "a", "b", "a_record", "b_record"}.
    `a_record` is the record cut into A (the first splittable one from `index` on)."""
    count = len(self)
    home, cut = int(index), None
    for _ in range(count):
      cut = halves(self.record_text(home, read), self._rng(home, 0))
      if cut is not None:
        break
      home = (home + 1) % count
    if cut is None:
      raise ConfigError("no record of the split has two words to build a sentence pair from")
    label = int(self._rng(index, 1).random() < 0.5)
    a, b = cut
    if label == 1:
      return {"label": 1, "a": a, "b": b, "a_record": home, "b_record": home}
    if self.task == "sop":
      return {"label": 0, "a": b, "b": a, "a_record": home, "b_record": home}
    # NSP negative: another record's second half (its whole text if it has one word).
    other = self._negative(index, home)
    other_text = self.record_text(other, read)
    other_cut = halves(other_text, self._rng(other, 0))
    return {"label": 0, "a": a, "b": other_cut[1] if other_cut else other_text,
            "a_record": home, "b_record": other}

  def _encode(self, plan: dict, a: list[int], b: list[int]) -> dict[str, np.ndarray]:
    """The pair's example from the pieces of its A and B."""
    a, b = fit_pair(a, b, self.max_length - 3)
    tokens = np.full((self.max_length,), text.PAD, np.int32)
    token_types = np.zeros((self.max_length,), np.int32)
    pieces = [text.CLS, *a, text.SEP, *b, text.SEP]
    tokens[:len(pieces)] = pieces
    token_types[len(a) + 2:len(pieces)] = 1
    return {"tokens": tokens, "token_types": token_types,
            "pair_label": np.asarray(plan["label"], np.int32)}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.__getitems__([index])[0]

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """The examples of `indices`: their records and (for NSP) their negatives' records in
    one batched read, every A and B tokenised in one call."""
    wanted = {int(i) for i in indices}
    if self.task == "nsp":
      wanted |= {self._negative(i, int(i)) for i in indices}  # home is i but for one-word texts
    order = sorted(wanted)
    read = {i: text.decode_text(r[self.text_key])
            for i, r in zip(order, pipeline.read_records(self.source, order))}
    plans = [self.plan(i, read) for i in indices]
    if self._tokenizer is None:
      self._tokenizer = text.load_tokenizer(self.tokenizer_path)
    pieces = [e.ids for e in self._tokenizer.encode_batch(
        [p[k] for p in plans for k in ("a", "b")], add_special_tokens=False)]
    return [self._encode(p, pieces[2 * n], pieces[2 * n + 1]) for n, p in enumerate(plans)]


def pair_statistics(pairs: SentencePairs, indices: Sequence[int]) -> dict:
  """How a split's records pair up: the share cut at a sentence boundary, at a word
  boundary, or not at all (one word), and the share of positive labels."""
  kinds = {"sentence": 0, "word": 0, "unsplittable": 0}
  positives = 0
  for index in indices:
    value = pairs.record_text(index)
    kinds["sentence" if len(split_sentences(value)) >= 2 else
          "word" if len(value.split()) >= 2 else "unsplittable"] += 1
    positives += pairs.plan(index)["label"]
  total = max(len(indices), 1)
  return {**{f"{k}_fraction": v / total for k, v in kinds.items()},
          "positive_fraction": positives / total, "records": len(indices)}


# -------------------------------------------------------------------------------- packing

def pack_units(lengths: Sequence[int], capacity: int, open_limit: int = PACK_OPEN
               ) -> list[list[int]]:
  """First-fit of units with `lengths` (each <= capacity) into sequences of `capacity`,
  in order, at most `open_limit` sequences open (the fullest closes when none has room).
  Returns the unit indices of every sequence, in the order the sequences were opened."""
  sequences: list[list[int]] = []
  room: list[int] = []       # free space of each open sequence
  open_ids: list[int] = []   # their index in `sequences`
  for unit, length in enumerate(lengths):
    if length > capacity:
      raise ValueError(f"unit {unit} has {length} > {capacity} tokens")
    slot = next((k for k, free in enumerate(room) if free >= length), None)
    if slot is None:
      if len(room) >= open_limit:
        fullest = int(np.argmin(room))
        del room[fullest], open_ids[fullest]
      sequences.append([])
      room.append(capacity)
      open_ids.append(len(sequences) - 1)
      slot = len(room) - 1
    sequences[open_ids[slot]].append(unit)
    room[slot] -= length
  return sequences


class PackedTexts(Sequence):
  """The records of `source`, tokenised and packed (module docstring): a random-access
  source of {"tokens", "segments", "positions"} (`within`) or {"tokens"}."""

  def __init__(self, source: Sequence[Any], tokenizer_path: str, max_length: int, seed: int,
               text_key: str = "text", within: bool = True, description: str = "texts",
               log=print):
    if max_length < 3:
      raise ConfigError(f"packing needs data.max_length >= 3, not {max_length}")
    self.source, self.tokenizer_path, self.max_length = source, tokenizer_path, int(max_length)
    self.seed, self.text_key, self.within = int(seed), text_key, within
    self._tokenizer = None
    start = time.perf_counter()
    order = np.random.default_rng(self.seed).permutation(len(source))
    chunk = self.max_length - 2
    records, offsets, lengths = [], [], []
    reported = start
    for first in range(0, len(order), 4096):
      batch = [int(i) for i in order[first:first + 4096]]
      encoded = self._encode_texts(pipeline.read_records(source, batch))
      for record, pieces in zip(batch, encoded):
        for offset in range(0, max(len(pieces), 1), chunk):
          records.append(record)
          offsets.append(offset)
          lengths.append(min(chunk, max(len(pieces) - offset, 0)) + 2)
      if time.perf_counter() - reported > 10:  # a large corpus: progress every 10 s
        reported = time.perf_counter()
        log(f"  packing {description}: tokenised {min(first + 4096, len(order)):,} of "
            f"{len(order):,} texts", flush=True)
    self.unit_record = np.asarray(records, np.int64)
    self.unit_offset = np.asarray(offsets, np.int64)
    self.unit_length = np.asarray(lengths, np.int64)
    sequences = pack_units(lengths, self.max_length)
    self.sequence_units = [np.asarray(s, np.int64) for s in sequences]
    self.padding_fraction = 1 - float(self.unit_length.sum()) / (len(sequences) * self.max_length)
    log(f"  packed {len(order):,} texts of {description} ({len(lengths):,} units) into "
        f"{len(sequences):,} sequences of {self.max_length} tokens: "
        f"{self.padding_fraction:.1%} padding ({time.perf_counter() - start:.1f}s)", flush=True)

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None}

  def __len__(self) -> int:
    return len(self.sequence_units)

  def __repr__(self) -> str:
    return (f"PackedTexts({self.source!r}, {self.max_length}, seed {self.seed}, "
            f"{'within' if self.within else 'across'})")

  def _encode_texts(self, records: list) -> list[list[int]]:
    if self._tokenizer is None:
      self._tokenizer = text.load_tokenizer(self.tokenizer_path)
    texts = [text.decode_text(r[self.text_key]) for r in records]
    return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.__getitems__([index])[0]

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    units = [self.sequence_units[int(i)] for i in indices]
    wanted = sorted({int(r) for u in units for r in self.unit_record[u]})
    pieces = dict(zip(wanted, self._encode_texts(pipeline.read_records(self.source, wanted))))
    chunk = self.max_length - 2
    out = []
    for sequence in units:
      tokens = np.full((self.max_length,), text.PAD, np.int32)
      segments = np.zeros((self.max_length,), np.int32)
      positions = np.zeros((self.max_length,), np.int32)
      cursor = 0
      for number, unit in enumerate(sequence, start=1):
        offset = int(self.unit_offset[unit])
        body = pieces[int(self.unit_record[unit])][offset:offset + chunk]
        length = len(body) + 2
        tokens[cursor:cursor + length] = [text.CLS, *body, text.SEP]
        segments[cursor:cursor + length] = number
        positions[cursor:cursor + length] = np.arange(length)
        cursor += length
      if self.within:
        out.append({"tokens": tokens, "segments": segments, "positions": positions})
      else:
        out.append({"tokens": tokens})
    return out
