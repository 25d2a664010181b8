"""TFDS random-access data sources (ArrayRecord), with no TensorFlow needed.

Every dataset, local or from the TFDS catalogue, goes through one code path:
`tfds.builder(name, data_dir)` -> check it is prepared in ArrayRecord ->
`builder.as_data_source(split)`. A source is a `Sequence` of dicts; for image
datasets each has `image` (uint8 [H, W, C] numpy) and `label` (int), plus any
other features the dataset defines.

Names: `ALIASES` maps friendly names to the offline builders this project
ships, so `fashion_mnist` means `fashion_mnist_local` (built from the Debian
IDX files, no download). Any other name is passed to TFDS unchanged, e.g.
`cifar10` or `imagenet2012` prepared in ArrayRecord under `data_dir`
(`TFDS_DATA_DIR=gs://bucket/tensorflow_datasets` works too). To read a
catalogue dataset itself, bypassing an alias, use its versioned name, e.g.
`fashion_mnist:3.0.1`.

Data is never built on read: a missing dataset raises `DataNotPreparedError`,
whose message gives the `python -m ssl_jax.data.prepare ...` command.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from ssl_jax.core.errors import ConfigError, DataNotPreparedError
from ssl_jax.data import builders  # importing it registers every offline builder with TFDS

# Friendly name -> registered TFDS builder name of the offline builder.
ALIASES: dict[str, str] = builders.ALIASES
# Builders this project ships, which need no network (their errors say what to do).
OFFLINE_BUILDERS = builders.NAMES

_ARRAY_RECORD = "array_record"



@dataclasses.dataclass(frozen=True)
class DatasetSummary:
  """What a model/config needs to know about a dataset, read from its info."""

  name: str  # The TFDS builder name that was opened (after aliasing).
  num_classes: int | None  # From the label ClassLabel; None if there is none.
  image_shape: tuple[int | None, ...] | None  # None dims vary per image.
  split_sizes: dict[str, int]  # e.g. {"train": 60000, "test": 10000}.


def resolve_name(name: str) -> str:
  """Maps a friendly dataset name to the TFDS builder name (see `ALIASES`)."""
  return ALIASES.get(name, name)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else TFDS's default (~/tensorflow_datasets)."""
  if data_dir:
    return os.fspath(data_dir)
  return os.environ.get("TFDS_DATA_DIR") or os.fspath(
      tfds.core.constants.DATA_DIR)


def prepare_command(name: str, data_dir: str | os.PathLike[str] | None) -> str:
  """The shell command that prepares `name` into `data_dir`."""
  return (f"python -m ssl_jax.data.prepare {name} "
          f"--data_dir {resolve_data_dir(data_dir)}")


def get_builder(name: str, data_dir: str | os.PathLike[str] | None = None,
                **builder_kwargs: Any) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder for `name` (aliases applied) in `data_dir`.

  Raises:
    ValueError: TFDS knows no dataset of that name (message is kept short).
  """
  try:
    return tfds.builder(resolve_name(name), data_dir=resolve_data_dir(data_dir),
                        **builder_kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    # TFDS's own message lists the whole catalogue (~1000 lines); say less.
    raise ConfigError(
        f"Unknown dataset {name!r}: not an alias ({sorted(ALIASES)}) and not "
        "a TFDS catalogue name, nor a dataset prepared under "
        f"{resolve_data_dir(data_dir)}.") from e


def _prepared_builder(name: str, data_dir) -> tfds.core.DatasetBuilder:
  """The builder of `name`, checked to be prepared in ArrayRecord format."""
  builder = get_builder(name, data_dir)
  if not builder.is_prepared():
    raise DataNotPreparedError(
        f"Dataset {name!r} (TFDS builder {builder.name!r}) is not prepared in "
        f"{builder.data_dir}. Prepare it once with:\n  "
        f"{prepare_command(name, data_dir)}")
  formats = {str(getattr(f, "value", f))
             for f in builder.info.available_file_formats()}
  if _ARRAY_RECORD not in formats:
    raise DataNotPreparedError(
        f"Dataset {name!r} is prepared in {builder.data_dir} as "
        f"{sorted(formats)}, but random access needs ArrayRecord. Prepare an "
        "ArrayRecord copy in another data_dir (or delete this one) with:\n  "
        f"python -m ssl_jax.data.prepare {name} --data_dir OTHER_DIR")
  return builder


def get_source(name: str, split: str,
               data_dir: str | os.PathLike[str] | None = None) -> Sequence[Any]:
  """Opens a prepared split as a random-access source; reads nothing yet.

  Args:
    name: a TFDS name (`cifar10`, `imagenet2012:5.1.0`, ...) or an alias from
      `ALIASES` (`fashion_mnist` -> the offline `fashion_mnist_local`).
    split: a split, optionally sliced as TFDS allows: `train`, `train[:90%]`,
      `train[90%:]`, `test[:1000]`, `train+test`.
    data_dir: where prepared datasets live; default $TFDS_DATA_DIR, else
      TFDS's default directory.

  Returns:
    A `Sequence` (`len`, `source[i]`, `source.__getitems__(indices)`) of dicts,
    e.g. {"image": uint8 [H, W, C], "label": int}, with a repr that names the
    dataset and split (grain checks it when an iterator state is restored).

  Raises:
    DataNotPreparedError: (a FileNotFoundError) not prepared in ArrayRecord;
      the message names the `python -m ssl_jax.data.prepare` command.
    ValueError: unknown dataset name or bad split string.
  """
  builder = _prepared_builder(name, data_dir)
  try:
    return builder.as_data_source(split=split, file_format=_ARRAY_RECORD)
  except (ValueError, KeyError, AssertionError) as e:
    raise ConfigError(
        f"Bad split {split!r} for dataset {name!r}: {str(e).rstrip('.')}. "
        f"Known splits: {sorted(builder.info.splits)}; slices look like "
        "'train[:90%]'.") from e


def dataset_info(name: str,
                 data_dir: str | os.PathLike[str] | None = None,
                 label_key: str = "label") -> DatasetSummary:
  """Class count (of the `label_key` ClassLabel), image shape and split sizes of a
  prepared dataset.

  Reads only the dataset's metadata (dataset_info.json), no records.

  Raises:
    DataNotPreparedError: as in `get_source`.
  """
  builder = _prepared_builder(name, data_dir)
  features = builder.info.features
  label = features[label_key] if label_key in features else None
  image = features["image"] if "image" in features else None
  return DatasetSummary(
      name=builder.name,
      num_classes=getattr(label, "num_classes", None),
      image_shape=tuple(image.shape) if image is not None else None,
      split_sizes={split: int(info.num_examples)
                   for split, info in builder.info.splits.items()},
  )
