"""Fashion-MNIST with captions: a small paired image-text dataset built offline, for
testing image-text objectives (CLIP) where no captioned dataset can be downloaded.

Every image of the Debian IDX files (ssl_jax/data/builders/fashion_mnist_local.py) gets one
caption written from hand-made templates and names for its class: example i of a split
uses template i mod 6 and name (i div 6) mod 3 of its class, e.g. "a small grey picture
of a sneaker" or "a pair of trousers on a black background". Features: `image` uint8 [28,
28, 1], `label` (the 10 classes) and `caption` (text).

This is a functional test of the image-text pipeline, not a result: the captions say
nothing the label does not, so a model that matches them has learned the ten classes
from label-derived text. Zero-shot prompts should use a template the captions do not
(`ZERO_SHOT_TEMPLATE`), so that a zero-shot score is not a template lookup.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.data.builders import fashion_mnist_local

# Three names per class, the first is the one zero-shot prompts use.
CLASS_NAMES = (
    ("t-shirt", "top", "tee"),
    ("pair of trousers", "pair of pants", "pair of slacks"),
    ("pullover", "sweater", "jumper"),
    ("dress", "frock", "gown"),
    ("coat", "jacket", "overcoat"),
    ("sandal", "strappy sandal", "summer sandal"),
    ("shirt", "button-up shirt", "blouse"),
    ("sneaker", "trainer", "running shoe"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot", "short boot"),
)
TEMPLATES = (
    "a small grey picture of a {}",
    "a {} on a black background",
    "this is a {}",
    "a low resolution image of a {}",
    "an item from a clothing catalogue: a {}",
    "a centred {} seen from the front",
)
ZERO_SHOT_TEMPLATE = "a photo of a {}."  # not among the captions' templates


def caption(index: int, label: int) -> str:
  names = CLASS_NAMES[label]
  return TEMPLATES[index % len(TEMPLATES)].format(names[(index // len(TEMPLATES)) % len(names)])


class FashionMnistCaptions(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (60000 train / 10000 test) with one templated caption per image."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built offline from the Debian IDX files and caption templates."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST images, each with a caption from hand-made templates.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=fashion_mnist_local.IMAGE_SHAPE, dtype=np.uint8,
                                          encoding="bytes"),
            "label": tfds.features.ClassLabel(names=list(fashion_mnist_local.LABEL_NAMES)),
            "caption": tfds.features.Text(),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    arrays = {split: fashion_mnist_local.load_split(split) for split in ("train", "test")}
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label), "caption": caption(index, int(label))}
