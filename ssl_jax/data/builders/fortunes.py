"""English text built offline: Debian's fortune files as a TFDS text dataset.

The Debian packages `fortunes` and `fortunes-min` (`apt-get install -y fortunes
fortunes-min`) install ~15k short texts in ~40 category files under
/usr/share/games/fortunes (each `NAME` with its `NAME.dat` index and a `NAME.u8` link).
In a file, entries are separated by lines holding only `%`. Some entries were typeset
for teletypes: `_\\bX` underlines X, `X\\bX` emboldens it, and `___\\b\\b\\band` underlines a
word; a few hold bells and other control characters.

Cleaning (`clean`): overstrikes resolve to the printed character (the letter, not the
underscore), control characters other than newline and tab are dropped, trailing spaces
are stripped from every line and blank lines from both ends. Empty entries are dropped.

Splits: every distinct text (compared with whitespace collapsed) is kept once, with the
category of its first occurrence in file-name order, then goes to `test` when the CRC32
of that text is 0 mod 10, else to `train`: deterministic, about 10% test, and no text is
in both. Features: `text` (UTF-8) and `category` (ClassLabel of the file names).
"""

from __future__ import annotations

import os
import pathlib
import re
import zlib

import tensorflow_datasets as tfds

SOURCE_DIR_ENV = "SSL_JAX_FORTUNES_DIR"
DEFAULT_SOURCE_DIR = "/usr/share/games/fortunes"
INSTALL_HINT = "apt-get install -y fortunes fortunes-min"
TEST_MODULUS = 10
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def source_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(SOURCE_DIR_ENV) or DEFAULT_SOURCE_DIR)


def category_files(directory: pathlib.Path | None = None) -> dict[str, pathlib.Path]:
  """{category: path} of the fortune files in `directory`: regular files without a dot
  in their name (not the `.dat` indices or `.u8` links), in name order."""
  directory = source_dir() if directory is None else pathlib.Path(directory)
  files = {p.name: p for p in sorted(directory.iterdir())
           if p.is_file() and not p.is_symlink() and "." not in p.name} if directory.is_dir() else {}
  if not files:
    raise FileNotFoundError(f"no fortune files in {directory}: install them with "
                            f"`{INSTALL_HINT}`, or set ${SOURCE_DIR_ENV} to a directory of "
                            "fortune files (entries separated by lines holding '%')")
  return files


def resolve_overstrike(line: str) -> str:
  """Typewriter overstrikes to the printed text: each run of k backspaces puts the next
  k characters over the k before them; of a letter and an underscore the letter wins."""
  out, pending = [], []
  i = 0
  while i < len(line):
    if line[i] == "\b":
      run = len(line[i:]) - len(line[i:].lstrip("\b"))
      run = min(run, len(out))
      pending = out[len(out) - run:] + pending if run else pending
      del out[len(out) - run:]
      i += len(line[i:]) - len(line[i:].lstrip("\b"))
      continue
    char = line[i]
    if pending:
      under = pending.pop(0)
      char = under if char == "_" and under != "_" else char
    out.append(char)
    i += 1
  return "".join(out + pending)


def clean(entry: str) -> str:
  lines = [_CONTROL.sub("", resolve_overstrike(line)).rstrip() for line in entry.split("\n")]
  return "\n".join(lines).strip("\n")


def parse(text: str) -> list[str]:
  """The cleaned, non-empty entries of one fortune file's text."""
  entries, current = [], []
  for line in text.split("\n"):
    if line.rstrip("\r") == "%":
      entries.append("\n".join(current))
      current = []
    else:
      current.append(line.rstrip("\r"))
  entries.append("\n".join(current))
  return [e for e in (clean(e) for e in entries) if e.strip()]


def dedup_key(text: str) -> str:
  return " ".join(text.split())


def is_test(text: str) -> bool:
  return zlib.crc32(dedup_key(text).encode("utf-8")) % TEST_MODULUS == 0


def load(directory: pathlib.Path | None = None) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
  """(category names, {split: [(text, category index)]}) of every distinct entry."""
  files = category_files(directory)
  names, seen = list(files), set()
  splits = {"train": [], "test": []}
  for index, path in enumerate(files.values()):
    for entry in parse(path.read_bytes().decode("utf-8", errors="replace")):
      key = dedup_key(entry)
      if key in seen:
        continue
      seen.add(key)
      splits["test" if is_test(entry) else "train"].append((entry, index))
  return names, splits


class Fortunes(tfds.core.GeneratorBasedBuilder):
  """Debian's fortunes: ~15k English texts in ~40 categories, read from local files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built offline from the Debian fortune files."}

  def _info(self) -> tfds.core.DatasetInfo:
    # The category names are the file names; a prepared copy read where the files are not
    # installed gets them back from its own metadata (category.labels.txt).
    try:
      label = tfds.features.ClassLabel(names=list(category_files()))
    except FileNotFoundError:
      label = tfds.features.ClassLabel()
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Short English texts (jokes, quotations, poems) from the Debian "
                     "fortune packages, labelled by the file (category) they come from."),
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "category": label,
        }),
        supervised_keys=("text", "category"),
        disable_shuffling=True,
        homepage="https://packages.debian.org/fortunes",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    _, splits = load()
    return {split: self._generate_examples(records) for split, records in splits.items()}

  def _generate_examples(self, records):
    for index, (text, category) in enumerate(records):
      yield index, {"text": text, "category": category}
