"""Fashion-MNIST built offline from the Debian IDX files, as a TFDS builder.

The catalogue's `fashion_mnist` downloads from the internet; this builder reads
the same four IDX files from a local directory instead (Debian/Ubuntu package
`dataset-fashion-mnist`), so the project can prepare a real dataset on machines
with no network. It registers under the distinct name `fashion_mnist_local`
(`sources.py` maps the friendly name `fashion_mnist` to it), and writes the
same features as the catalogue would be read: `image` uint8 [28, 28, 1] and
`label` (ClassLabel, 10 classes).

Records keep the IDX order (`disable_shuffling=True`): record `i` of a split is
image `i` of its IDX file. That makes slices such as `train[:90%]` a
documented, reproducible subset and lets tests compare against a plain parse.
Training order is shuffled later, by grain, from (seed, epoch).

The image is stored as a raw-bytes `Tensor` feature, not `tfds.features.Image`:
encoding PNGs needs TensorFlow and decoding them needs PIL or OpenCV, none of
which this project requires; raw bytes also decode with one `np.frombuffer`.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

ALIAS = "fashion_mnist"  # the friendly name (data/builders/__init__.py): the offline build, no download
# Overrides where the IDX files are read from (tests point it at small files).
SOURCE_DIR_ENV = "SSL_JAX_FASHION_MNIST_DIR"
DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"

LABEL_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SHAPE = (28, 28, 1)

# split name -> IDX file prefix, as published by Zalando and shipped by Debian.
_SPLIT_FILES = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049


def source_dir() -> pathlib.Path:
  """The directory the IDX files are read from ($SSL_JAX_FASHION_MNIST_DIR)."""
  return pathlib.Path(os.environ.get(SOURCE_DIR_ENV) or DEFAULT_SOURCE_DIR)


def idx_paths(split: str, directory: pathlib.Path | None = None):
  """Returns (images_path, labels_path) of `split`'s gzipped IDX files."""
  directory = source_dir() if directory is None else pathlib.Path(directory)
  prefix = _SPLIT_FILES[split]
  return (directory / f"{prefix}-images-idx3-ubyte.gz",
          directory / f"{prefix}-labels-idx1-ubyte.gz")


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
  """Parses one gzipped IDX file (big-endian header, then uint8 data)."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  header = np.frombuffer(data, dtype=">i4", count=1 + ndim)
  if int(header[0]) != magic:
    raise ValueError(f"{path} is not an IDX file of the expected kind: magic "
                     f"number {int(header[0])}, expected {magic}.")
  shape = tuple(int(d) for d in header[1:])
  body = np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + ndim))
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path} is truncated: header says shape {shape} "
                     f"({int(np.prod(shape))} bytes), found {body.size} bytes.")
  return body.reshape(shape)


def load_split(split: str, directory: pathlib.Path | None = None):
  """Returns (images uint8 [N, 28, 28, 1], labels int64 [N]) from the IDX files.

  Raises:
    FileNotFoundError: the IDX files are missing; names the apt-get command.
  """
  images_path, labels_path = idx_paths(split, directory)
  missing = [str(p) for p in (images_path, labels_path) if not p.exists()]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files not found: {', '.join(missing)}. Install "
        f"them with `{INSTALL_HINT}`, or set ${SOURCE_DIR_ENV} to a directory "
        "holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.")
  images = _read_idx(images_path, _IMAGES_MAGIC, ndim=3)[..., None]
  labels = _read_idx(labels_path, _LABELS_MAGIC, ndim=1).astype(np.int64)
  if len(images) != len(labels) or images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(f"{images_path}: {images.shape} images do not match "
                     f"{labels.shape} labels or the {IMAGE_SHAPE} image shape.")
  return images, labels


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (60000 train / 10000 test) from local IDX files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built offline from the Debian IDX files."}

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: `dataset_info_from_configs` expects metadata files
    # beside the module, as in the TFDS catalogue's layout.
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Zalando's Fashion-MNIST article images, 28x28 grayscale "
                     "in 10 classes, read from local IDX files."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(
                shape=IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"),
            "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation=("@article{xiao2017fashion, title={Fashion-MNIST: a Novel "
                  "Image Dataset for Benchmarking Machine Learning Algorithms},"
                  " author={Xiao, Han and Rasul, Kashif and Vollgraf, Roland},"
                  " journal={arXiv:1708.07747}, year={2017}}"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    # Parse eagerly so a missing file fails before any split is written.
    arrays = {split: load_split(split) for split in _SPLIT_FILES}
    return {split: self._generate_examples(*arrays[split])
            for split in _SPLIT_FILES}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label)}
