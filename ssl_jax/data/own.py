"""Your own data as a prepared dataset, in one command and without TensorFlow:

    python -m ssl_jax.data.prepare my_photos --from_images DIR        # DIR/<class>/*.jpg, or DIR/*.jpg
    python -m ssl_jax.data.prepare my_scans --from_table list.csv     # columns: path[, label]
    python -m ssl_jax.data.prepare my_notes --from_text notes.txt     # or a folder of .txt files

Images: every file PIL opens under DIR. Class subfolders give the `label` (their names, in
sorted order); files directly in DIR make an unlabelled dataset (one or the other). A
table (.csv, or .parquet) lists `path` (relative to the table's folder) and
optionally `label` (any strings; classes in sorted order; Parquet needs pyarrow). Images of one size keep it;
otherwise each is resized on its shorter side to `--image_size` (default: the median of
the shorter sides) and centre-cropped square. Grayscale images stay one channel unless
any image has colour (then all are RGB). The per-channel mean and std of the train
images (in [0, 1]) are computed here.

Text: a file holds one text per paragraph (texts separated by blank lines); a folder holds
one text per file, with class subfolders as labels as for images.

The split is deterministic: an item goes to `test` when the CRC32 of its relative path
(of its text, for paragraphs) falls in the lowest `--test_fraction` of the range.

What was measured is stored beside the dataset (`ssl_jax_dataset.json` in its TFDS
folder); a run on the dataset takes image size, mean, std and its label field from there
instead of from the preset it was built from, warning about each value it replaces
(`apply_metadata`).
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import zlib

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builders import adhoc_builder

from ssl_jax.core import paths
from ssl_jax.core.errors import ConfigError, DataNotPreparedError

METADATA_FILE = "ssl_jax_dataset.json"
VERSION = "1.0.0"
TEXT_SUFFIXES = (".txt", ".md", ".text")


# ------------------------------------------------------------------------------ scanning


def _is_test(key: str, test_fraction: float) -> bool:
  return zlib.crc32(key.encode()) < test_fraction * 2**32


def scan_image_folder(root: str) -> tuple[list[tuple[str, str | None]], list[str]]:
  """([(path, class name or None)], class names) of the images under `root`."""
  root_path = pathlib.Path(root)
  if not root_path.is_dir():
    raise DataNotPreparedError(f"--from_images {root}: not a folder")
  files = sorted(p for p in root_path.rglob("*") if p.is_file() and not p.name.startswith("."))
  items = []
  for path in files:
    depth = len(path.relative_to(root_path).parts)
    if depth > 2:
      raise DataNotPreparedError(f"{path}: images go directly in {root} (unlabelled) or in "
                                 f"one subfolder per class ({root}/CLASS/IMAGE), not deeper")
    items.append((str(path), path.parent.name if depth == 2 else None))
  if not items:
    raise DataNotPreparedError(f"--from_images {root}: no files found")
  labelled = {label is not None for _, label in items}
  if len(labelled) > 1:
    raise DataNotPreparedError(f"--from_images {root}: some images are in class subfolders "
                               "and some are not; put every image in a class folder, or none")
  names = sorted({label for _, label in items if label is not None})
  return items, names


def read_table(table: str, path_column: str = "path",
               label_column: str = "label") -> tuple[list[tuple[str, str | None]], list[str]]:
  """([(path, label or None)], class names) from a CSV or Parquet list of images."""
  if table.endswith(".parquet"):
    try:
      from pyarrow import parquet  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise DataNotPreparedError(f"{table}: reading Parquet needs pyarrow (pip install "
                                 "pyarrow), or save the table as CSV") from None
    rows = [{key: str(value) for key, value in row.items()}
            for row in parquet.read_table(table).to_pylist()]
  else:
    with open(table, newline="") as f:
      rows = list(csv.DictReader(f))
  if not rows:
    raise DataNotPreparedError(f"{table}: no rows")
  if path_column not in rows[0]:
    raise DataNotPreparedError(f"{table}: no column {path_column!r} (columns: {sorted(rows[0])}); "
                               "name the image column with --path_column")
  base = os.path.dirname(os.path.abspath(table))
  has_label = label_column in rows[0]
  items = [(os.path.join(base, row[path_column]), row[label_column] if has_label else None)
           for row in rows]
  names = sorted({label for _, label in items if label is not None})
  return items, names


def scan_text(source: str) -> tuple[list[tuple[str, str, str | None]], list[str]]:
  """([(split key, text, class name or None)], class names) of a text file or folder."""
  source_path = pathlib.Path(source)
  if source_path.is_file():
    paragraphs = [p.strip() for p in source_path.read_text(encoding="utf-8").split("\n\n")]
    items = [(text, text, None) for text in paragraphs if text]
  elif source_path.is_dir():
    files = sorted(p for p in source_path.rglob("*")
                   if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    items = []
    for path in files:
      relative = path.relative_to(source_path)
      if len(relative.parts) > 2:
        raise DataNotPreparedError(f"{path}: text files go directly in {source} or in one "
                                   "subfolder per class, not deeper")
      text = path.read_text(encoding="utf-8").strip()
      if text:
        items.append((str(relative), text, path.parent.name if len(relative.parts) == 2 else None))
    if len({label is None for _, _, label in items}) > 1:
      raise DataNotPreparedError(f"--from_text {source}: some files are in class subfolders and "
                                 "some are not; put every file in a class folder, or none")
  else:
    raise DataNotPreparedError(f"--from_text {source}: no such file or folder")
  if not items:
    raise DataNotPreparedError(f"--from_text {source}: no text found")
  return items, sorted({label for _, _, label in items if label is not None})


# ------------------------------------------------------------------------------- images


def _open_image(path: str):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    image = Image.open(path)
    image.load()
  except Exception as error:  # PIL's errors for unreadable files are of many types
    raise DataNotPreparedError(f"{path}: not an image PIL can read ({error})") from None
  return image


def _fit(image, size: int, channels: int) -> np.ndarray:
  """uint8 [size, size, channels]: shorter side resized to `size`, centre-cropped square."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  image = image.convert("L" if channels == 1 else "RGB")
  width, height = image.size
  if (width, height) != (size, size):
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
  array = np.asarray(image, np.uint8)
  return array.reshape(size, size, channels)


def image_geometry(items, image_size: int | None) -> tuple[int, int, int]:
  """(side, channels, how many images change size) over every image."""
  sizes, colour = [], False
  for path, _ in items:
    image = _open_image(path)
    sizes.append(image.size)
    colour = colour or image.mode not in ("L", "1", "I", "I;16", "F", "LA")
  shorter = sorted(min(size) for size in sizes)
  side = image_size or (sizes[0][0] if len(set(sizes)) == 1 and sizes[0][0] == sizes[0][1]
                        else shorter[len(shorter) // 2])
  if side < 8:
    raise DataNotPreparedError(f"image side {side}: too small to train on (use --image_size)")
  changed = sum(1 for size in sizes if size != (side, side))
  return side, 3 if colour else 1, changed


def prepare_images(name: str, items, class_names, data_dir: str, image_size: int | None = None,
                   test_fraction: float = 0.1, source: str = "") -> dict:
  """Writes the TFDS dataset `name` (ArrayRecord, `image` raw uint8 bytes [+ `label`]) and
  its metadata; returns the metadata."""
  side, channels, changed = image_geometry(items, image_size)
  if changed:
    print(f"{name}: {changed} of {len(items)} images are resized (shorter side) and "
          f"centre-cropped to {side}x{side}", flush=True)
  labelled = bool(class_names)
  index = {label: i for i, label in enumerate(class_names)}
  splits = {"train": [], "test": []}
  root = os.path.commonpath([os.path.abspath(p) for p, _ in items])
  for path, label in items:
    key = os.path.relpath(os.path.abspath(path), root)
    splits["test" if _is_test(key, test_fraction) else "train"].append((path, label))
  if not splits["train"] or not splits["test"]:
    raise DataNotPreparedError(f"{name}: {len(items)} images give an empty split at "
                               f"--test_fraction {test_fraction}; add images or change it")
  total = np.zeros(channels)
  total_sq = np.zeros(channels)
  for path, _ in splits["train"]:
    pixels = _fit(_open_image(path), side, channels).reshape(-1, channels) / 255.0
    total += pixels.mean(0)
    total_sq += (pixels**2).mean(0)
  mean = total / len(splits["train"])
  std = np.sqrt(np.maximum(total_sq / len(splits["train"]) - mean**2, 1e-12))

  features = {"image": tfds.features.Tensor(shape=(side, side, channels), dtype=np.uint8,
                                            encoding="bytes")}
  if labelled:
    features["label"] = tfds.features.ClassLabel(names=list(class_names))

  def examples(split):
    for number, (path, label) in enumerate(splits[split]):
      example = {"image": _fit(_open_image(path), side, channels)}
      if labelled:
        example["label"] = index[label]
      yield number, example

  metadata = {"modality": "image", "image_size": side, "channels": channels,
              "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
              "label_key": "label" if labelled else "", "classes": list(class_names),
              "splits": {k: len(v) for k, v in splits.items()}, "source": source,
              "test_fraction": test_fraction}
  return _store(name, data_dir, tfds.features.FeaturesDict(features),
                {split: examples(split) for split in splits}, metadata)


# --------------------------------------------------------------------------------- text


def prepare_text(name: str, items, class_names, data_dir: str, test_fraction: float = 0.1,
                 source: str = "") -> dict:
  labelled = bool(class_names)
  index = {label: i for i, label in enumerate(class_names)}
  splits = {"train": [], "test": []}
  for key, text, label in items:
    splits["test" if _is_test(key, test_fraction) else "train"].append((text, label))
  if not splits["train"] or not splits["test"]:
    raise DataNotPreparedError(f"{name}: {len(items)} texts give an empty split at "
                               f"--test_fraction {test_fraction}; add texts or change it")
  features = {"text": tfds.features.Text()}
  if labelled:
    features["label"] = tfds.features.ClassLabel(names=list(class_names))

  def examples(split):
    for number, (text, label) in enumerate(splits[split]):
      yield number, ({"text": text, "label": index[label]} if labelled else {"text": text})

  metadata = {"modality": "text", "label_key": "label" if labelled else "",
              "classes": list(class_names), "splits": {k: len(v) for k, v in splits.items()},
              "source": source, "test_fraction": test_fraction}
  return _store(name, data_dir, tfds.features.FeaturesDict(features),
                {split: examples(split) for split in splits}, metadata)


class _ExamplesBuilder(adhoc_builder.AdhocBuilder, skip_registration=True):
  """TFDS's builder-without-a-class, fed plain Python iterables: its own split code asks
  whether each split is a tf.data.Dataset, which imports TensorFlow."""

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples_iterator(examples)
            for split, examples in self._split_datasets.items()}


def _store(name, data_dir, features, split_examples, metadata) -> dict:
  if paths.exists(paths.join(data_dir, name)):
    raise DataNotPreparedError(f"{paths.join(data_dir, name)} exists already: choose another "
                               "name, or delete it to prepare again")
  builder = _ExamplesBuilder(
      name=name, version=VERSION, features=features, split_datasets=split_examples,
      data_dir=data_dir, file_format="array_record", disable_shuffling=True,
      description=f"Prepared by ssl_jax.data.prepare from {metadata['source']}")
  builder.download_and_prepare(file_format="array_record")
  paths.write_text(metadata_path(name, data_dir), json.dumps(metadata, indent=2))
  print(f"{name}: prepared {metadata['splits']} at {builder.data_dir}", flush=True)
  return metadata


# ----------------------------------------------------------------------- reading it back


def metadata_path(name: str, data_dir: str) -> str:
  return paths.join(data_dir, name, METADATA_FILE)


def read_metadata(name: str, data_dir: str) -> dict | None:
  """The metadata of a dataset prepared from your own files; None for any other."""
  path = metadata_path(name, data_dir)
  return json.loads(paths.read_text(path)) if paths.exists(path) else None


def apply_metadata(data: ml_collections.ConfigDict, data_dir: str, warn=print) -> None:
  """Puts the prepared dataset's own image size, mean, std and label field into config.data
  in place of the preset's, with a warning naming each value replaced; nothing for datasets
  not prepared from your own files."""
  metadata = read_metadata(data.name, data_dir)
  if metadata is None:
    return
  if metadata["modality"] != data.modality:
    raise ConfigError(f"dataset {data.name!r} holds {metadata['modality']} data, but this "
                      f"experiment's data section is for {data.modality}: use a "
                      f"{metadata['modality']} experiment")
  wanted = {"label_key": metadata["label_key"]}
  if metadata["modality"] == "image":
    wanted.update(image_size=metadata["image_size"], mean=tuple(metadata["mean"]),
                  std=tuple(metadata["std"]))
    wanted["features"] = ("image", "label") if metadata["label_key"] else ("image",)
  else:
    wanted["features"] = ("text", "label") if metadata["label_key"] else ("text",)
  for field, value in wanted.items():
    current = data[field]
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
      same = len(current) == len(value) and all(
          np.isclose(a, b) if not isinstance(a, str) else a == b for a, b in zip(current, value))
    else:
      same = current == value
    if not same:
      warn(f"warning: data.{field} is {current!r} in the config but {value!r} for the prepared "
           f"dataset {data.name!r}: using the dataset's")
      data[field] = value
