"""Prepares a dataset once, in ArrayRecord format, for `sources.get_source`.

  python -m ssl_jax.data.prepare fashion_mnist --data_dir ~/tensorflow_datasets
  python -m ssl_jax.data.prepare photo_crops    # offline colour crops (colorization)
  python -m ssl_jax.data.prepare cifar10        # default: $TFDS_DATA_DIR
  python -m ssl_jax.data.prepare imagenet2012 --manual_dir ~/imagenet_tars
  python -m ssl_jax.data.prepare my_photos --from_images DIR   # your own data (data/own.py)
  python -m ssl_jax.data.prepare my_scans --from_table list.csv
  python -m ssl_jax.data.prepare my_notes --from_text notes.txt

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

from ssl_jax.core import log
from ssl_jax.core.errors import DataNotPreparedError
from ssl_jax.data import own, sources


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


def prepare_own(args) -> dict:
  """Your own images or text (data/own.py) as the dataset `args.name`."""
  data_dir = sources.resolve_data_dir(args.data_dir)
  if args.name in sources.ALIASES or args.name in sources.ALIASES.values():
    raise DataNotPreparedError(f"{args.name!r} is a dataset this project builds itself; "
                               "give your data another name")
  if not 0 < args.test_fraction < 1:
    raise DataNotPreparedError(f"--test_fraction {args.test_fraction}: must lie in (0, 1)")
  if args.from_text:
    items, classes = own.scan_text(args.from_text)
    return own.prepare_text(args.name, items, classes, data_dir, args.test_fraction,
                            source=args.from_text)
  if args.from_images:
    items, classes = own.scan_image_folder(args.from_images)
  else:
    items, classes = own.read_table(args.from_table, args.path_column, args.label_column)
  return own.prepare_images(args.name, items, classes, data_dir, args.image_size,
                            args.test_fraction, source=args.from_images or args.from_table)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m ssl_jax.data.prepare",
      description=("Prepare a TFDS dataset in ArrayRecord format (random "
                   "access, no TensorFlow needed to read it). Does nothing "
                   "if it is already prepared. With --from_images, --from_table or "
                   "--from_text: build the dataset NAME from your own files."))
  parser.add_argument(
      "name", help=("dataset name: an alias (" + ", ".join(
          f"{k} -> {v}" for k, v in sources.ALIASES.items()) +
                    ") or any TFDS name, e.g. cifar10, imagenet2012:5.1.0; with --from_*, "
                    "the name to give your dataset"))
  parser.add_argument(
      "--data_dir", default=None,
      help="where to write it (default: $TFDS_DATA_DIR, else "
      "~/tensorflow_datasets)")
  parser.add_argument(
      "--manual_dir", default=None,
      help="for datasets TFDS cannot download itself (e.g. imagenet2012): "
      "the directory holding the manually downloaded files")
  source = parser.add_mutually_exclusive_group()
  source.add_argument("--from_images", metavar="DIR",
                      help="a folder of images: one subfolder per class, or all in DIR (unlabelled)")
  source.add_argument("--from_table", metavar="FILE",
                      help="a .csv (or .parquet) listing image paths and optionally labels")
  source.add_argument("--from_text", metavar="PATH",
                      help="a text file (texts separated by blank lines) or a folder of text "
                      "files (one subfolder per class, or none)")
  parser.add_argument("--image_size", type=int, default=None,
                      help="side of the square images (default: the images' own, if they share "
                      "one; else the median of their shorter sides)")
  parser.add_argument("--test_fraction", type=float, default=0.1,
                      help="share of the items in the test split (by a hash of each path)")
  parser.add_argument("--path_column", default="path", help="--from_table: the image column")
  parser.add_argument("--label_column", default="label", help="--from_table: the label column "
                      "(absent: unlabelled)")
  args = parser.parse_args(argv)
  with log.fail_cleanly():
    if args.from_images or args.from_table or args.from_text:
      prepare_own(args)
    else:
      prepare(args.name, args.data_dir, args.manual_dir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
