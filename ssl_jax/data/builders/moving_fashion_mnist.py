"""Moving Fashion-MNIST: short videos of a Fashion-MNIST item bouncing inside a larger
canvas, built offline the way Moving MNIST is (Srivastava, Mansimov, Salakhutdinov,
"Unsupervised Learning of Video Representations using LSTMs", ICML 2015: digits moving
with a random direction and a fixed speed inside a 64x64 canvas, reflected at its edges).

Here: one item per video (so that a video has one class, which the probes classify),
FRAMES frames of CANVAS x CANVAS grey pixels, the item's top-left corner starting
uniformly in the canvas, its direction uniform on the circle and its speed SPEED pixels
per frame; a coordinate that would leave [0, CANVAS - 28] is reflected back inside.
Positions are rounded to whole pixels per frame; the item is pasted on a black canvas.

Deterministic: video i of a split is a pure function of (SEED, split, i) and of item i of
that split's Fashion-MNIST IDX file (the first VIDEOS[split] items, in file order), so
the dataset rebuilds bitwise (`tests/data/test_video_data.py`). Features: `video` uint8
[FRAMES, CANVAS, CANVAS, 1] and `label` (the item's class, Fashion-MNIST's names). The
source files are Fashion-MNIST's (`apt-get install -y dataset-fashion-mnist`).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.data.builders import fashion_mnist_local

SEED = 2015
FRAMES = 8
CANVAS = 48
SPEED = 3.0
ITEM = 28
VIDEOS = {"train": 10_000, "test": 2_000}
_SPLIT_IDS = {"train": 0, "test": 1}


def trajectory(rng: np.random.Generator, frames: int = FRAMES, canvas: int = CANVAS,
               speed: float = SPEED) -> np.ndarray:
  """int [frames, 2]: the item's top-left (row, column) in each frame."""
  limit = float(canvas - ITEM)
  position = rng.uniform(0.0, limit, size=2)
  angle = rng.uniform(0.0, 2 * np.pi)
  velocity = speed * np.array([np.sin(angle), np.cos(angle)])
  out = []
  for _ in range(frames):
    out.append(np.round(position).astype(np.int64))
    position = position + velocity
    for axis in range(2):  # reflect at the walls
      if position[axis] < 0:
        position[axis], velocity[axis] = -position[axis], -velocity[axis]
      elif position[axis] > limit:
        position[axis], velocity[axis] = 2 * limit - position[axis], -velocity[axis]
  return np.stack(out)


def make_video(item: np.ndarray, rng: np.random.Generator, frames: int = FRAMES,
               canvas: int = CANVAS) -> np.ndarray:
  """uint8 [frames, canvas, canvas, 1]: `item` [28, 28, 1] moving along `trajectory`."""
  video = np.zeros((frames, canvas, canvas, 1), np.uint8)
  for frame, (row, column) in enumerate(trajectory(rng, frames, canvas)):
    video[frame, row:row + ITEM, column:column + ITEM] = item
  return video


def video_rng(split: str, index: int, seed: int = SEED) -> np.random.Generator:
  return np.random.default_rng((seed, _SPLIT_IDS[split], index))


class MovingFashionMnist(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST items bouncing in a 48x48 canvas, 8 frames a video."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built offline from the Debian Fashion-MNIST IDX files."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Videos of one Fashion-MNIST item bouncing inside a larger canvas, "
                     "made as Moving MNIST is (Srivastava et al. 2015), from a fixed seed."),
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(FRAMES, CANVAS, CANVAS, 1), dtype=np.uint8,
                                          encoding="bytes"),
            "label": tfds.features.ClassLabel(names=list(fashion_mnist_local.LABEL_NAMES)),
        }),
        supervised_keys=("video", "label"),
        disable_shuffling=True,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    arrays = {split: fashion_mnist_local.load_split(split) for split in VIDEOS}
    return {split: self._generate_examples(split, *arrays[split]) for split in VIDEOS}

  def _generate_examples(self, split: str, images: np.ndarray, labels: np.ndarray):
    for index in range(min(VIDEOS[split], len(images))):
      yield index, {"video": make_video(images[index], video_rng(split, index)),
                    "label": int(labels[index])}
