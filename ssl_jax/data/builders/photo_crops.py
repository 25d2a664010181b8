"""Photo crops: a small colour image dataset built offline from three real photographs.

Fashion-MNIST is grey, and no catalogue colour dataset can be downloaded on a machine
without a network, so the colour objectives (colorization) need a colour dataset that
can be built from files a dependency ships: scikit-learn's two sample photographs
(`china.jpg`, `flower.jpg`, 640x427) and matplotlib's `grace_hopper.jpg` (512x600).

Each photograph is halved in size (2x2 block means), then cut into 32x32 crops at positions
drawn from a fixed seed. Train crops lie wholly in the left 75% of a photograph's width
and test crops wholly in the right 25%, so no test pixel was ever seen in training. The
label is the photograph a crop comes from (3 classes). Features match the image
catalogue datasets: `image` uint8 [32, 32, 3] and `label` (ClassLabel).

What it can show: that a colour pipeline (Lab conversion, ab targets, evaluation on
colour records) runs end to end on real colour statistics. What it cannot: three
photographs are no benchmark; telling them apart is easy from colour alone, and the
crops of one split overlap each other.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

CROP = 32
TRAIN_PER_PHOTO = 2000
TEST_PER_PHOTO = 300
TRAIN_FRACTION = 0.75  # of each photograph's width, from the left
LABEL_NAMES = ("china", "flower", "grace_hopper")
IMAGE_SHAPE = (CROP, CROP, 3)
# Overrides the crop counts ("TRAIN,TEST" per photograph); tests build small copies.
COUNTS_ENV = "SSL_JAX_PHOTO_CROPS_COUNTS"


def _package_dir(package: str) -> pathlib.Path:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"photo_crops reads sample photographs shipped by {package}, which is not installed: "
        f"pip install {'scikit-learn' if package == 'sklearn' else package}")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def photo_paths() -> dict[str, pathlib.Path]:
  sklearn_images = _package_dir("sklearn") / "datasets" / "images"
  matplotlib_data = _package_dir("matplotlib") / "mpl-data" / "sample_data"
  return {"china": sklearn_images / "china.jpg", "flower": sklearn_images / "flower.jpg",
          "grace_hopper": matplotlib_data / "grace_hopper.jpg"}


def load_photo(path: pathlib.Path) -> np.ndarray:
  """uint8 [H//2, W//2, 3]: the photograph halved in size, each pixel the mean of a 2x2
  block (an odd last row or column is dropped)."""
  from PIL import Image
  with Image.open(path) as image:
    image = image.convert("RGB")
    half = (image.width // 2, image.height // 2)
    return np.asarray(image.crop((0, 0, 2 * half[0], 2 * half[1])).resize(half, Image.BOX))


def crop_corners(height: int, width: int, split: str, count: int, seed: int) -> np.ndarray:
  """[count, 2] (row, column) top-left corners of the split's crops: train crops lie in
  columns [0, 0.75 W), test crops in [0.75 W, W)."""
  boundary = int(width * TRAIN_FRACTION)
  low, high = (0, boundary - CROP) if split == "train" else (boundary, width - CROP)
  if high < low:
    raise ValueError(f"a {width}-pixel-wide photograph has no room for {split} crops")
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  rows = rng.integers(0, height - CROP + 1, count)
  columns = rng.integers(low, high + 1, count)
  return np.stack([rows, columns], axis=1)


def counts() -> dict[str, int]:
  value = os.environ.get(COUNTS_ENV)
  if not value:
    return {"train": TRAIN_PER_PHOTO, "test": TEST_PER_PHOTO}
  train, test = (int(v) for v in value.split(","))
  return {"train": train, "test": test}


def crops(split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 32, 32, 3], labels [N]) of a split, photograph after photograph."""
  images, labels = [], []
  count = counts()[split]
  for label, (name, path) in enumerate(photo_paths().items()):
    photo = load_photo(path)
    for row, column in crop_corners(*photo.shape[:2], split, count, seed=label):
      images.append(photo[row:row + CROP, column:column + CROP])
      labels.append(label)
  return np.stack(images), np.asarray(labels, np.int64)


class PhotoCrops(tfds.core.GeneratorBasedBuilder):
  """32x32 colour crops of three photographs, spatially disjoint train and test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built offline from scikit-learn's and matplotlib's sample photos."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("32x32 crops of three colour photographs (china, flower, grace_hopper); "
                     "train crops from the left 75% of each, test crops from the right 25%."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"),
            "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    arrays = {split: crops(split) for split in ("train", "test")}
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label)}
