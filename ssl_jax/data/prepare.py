"""Prepares a dataset once, in ArrayRecord format, for `sources.get_source`.

  python -m ssl_jax.data.prepare fashion_mnist --data_dir ~/tensorflow_datasets
  python -m ssl_jax.data.prepare photo_crops    # offline colour crops (colorization)
  python -m ssl_jax.data.prepare cifar10        # default: $TFDS_DATA_DIR
  python -m ssl_jax.data.prepare imagenet2012 --manual_dir ~/imagenet_tars

`fashion_mnist` (an alias of the offline `fashion_mnist_local` builder) is
built from the Debian IDX files and `photo_crops` from sample photographs that
scikit-learn and matplotlib ship; neither needs a network. Catalogue datasets run
TFDS's normal build, which downloads (or reads `--manual_dir`); where that is
impossible, prepare on a machine that can and copy `DATA_DIR/NAME/` over, or
point $TFDS_DATA_DIR at a bucket that holds it. Running it again on a prepared
dataset does nothing and says so. TFDS writes into a temporary directory and
renames it when done, so an interrupted build leaves no half dataset behind.
"""

from __future__ import annotations

import argparse
import sys
import time

import tensorflow_datasets as tfds

from ssl_jax.data import sources


def prepare(name: str, data_dir: str | None = None,
            manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Builds `name` into `data_dir` as ArrayRecord unless already there.

  Returns:
    The prepared builder.

  Raises:
    errors.DataNotPreparedError: prepared already, but not as ArrayRecord.
    Whatever TFDS raises when it cannot download/build a catalogue dataset.
  """
  builder = sources.get_builder(name, data_dir)
  if builder.is_prepared():
    # Raises with a hint when the existing copy is not ArrayRecord.
    summary = sources.dataset_info(name, data_dir)
    print(f"{name}: already prepared at {builder.data_dir} "
          f"(splits {summary.split_sizes}); nothing to do.", flush=True)
    return builder

  print(f"{name}: preparing TFDS builder {builder.name!r} "
        f"v{builder.version} as ArrayRecord into {builder.data_dir} ...",
        flush=True)
  start = time.perf_counter()
  try:
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception:
    if builder.name in sources.OFFLINE_BUILDERS:
      raise  # Our offline builders' errors already say what to do.
    print(
        f"\n{name}: TFDS could not build it here (see the error below). "
        "Catalogue datasets need internet access, or for manual datasets the "
        f"files in --manual_dir. Alternatively, prepare it where that works "
        f"(this same command) and copy {name}/ into "
        f"{sources.resolve_data_dir(data_dir)}.\n",
        file=sys.stderr, flush=True)
    raise
  summary = sources.dataset_info(name, data_dir)
  print(f"{name}: prepared {summary.split_sizes} in "
        f"{time.perf_counter() - start:.1f}s at {builder.data_dir}", flush=True)
  return builder


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m ssl_jax.data.prepare",
      description=("Prepare a TFDS dataset in ArrayRecord format (random "
                   "access, no TensorFlow needed to read it). Does nothing "
                   "if it is already prepared."))
  parser.add_argument(
      "name", help=("dataset name: an alias (" + ", ".join(
          f"{k} -> {v}" for k, v in sources.ALIASES.items()) +
                    ") or any TFDS name, e.g. cifar10, imagenet2012:5.1.0"))
  parser.add_argument(
      "--data_dir", default=None,
      help="where to write it (default: $TFDS_DATA_DIR, else "
      "~/tensorflow_datasets)")
  parser.add_argument(
      "--manual_dir", default=None,
      help="for datasets TFDS cannot download itself (e.g. imagenet2012): "
      "the directory holding the manually downloaded files")
  args = parser.parse_args(argv)
  prepare(args.name, args.data_dir, args.manual_dir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
