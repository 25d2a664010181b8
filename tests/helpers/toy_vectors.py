"""A test-only dataset that is not images: 16-d float vectors in 4 gaussian clusters,
built offline as a TFDS ArrayRecord dataset (importing this module registers it)."""
import numpy as np
import tensorflow_datasets as tfds

DIM, CLASSES = 16, 4
SIZES = {"train": 256, "test": 128}


def make_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng({"train": 0, "test": 1}[split])
  centres = np.random.default_rng(42).standard_normal((CLASSES, DIM)) * 2.0
  labels = rng.integers(0, CLASSES, SIZES[split])
  vectors = centres[labels] + rng.standard_normal((SIZES[split], DIM))
  return vectors.astype(np.float32), labels.astype(np.int64)


class ToyVectors(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description="gaussian clusters for engine tests",
        features=tfds.features.FeaturesDict({
            "vector": tfds.features.Tensor(shape=(DIM,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=CLASSES)}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(*make_split(split)) for split in SIZES}

  def _generate_examples(self, vectors, labels):
    for index, (vector, label) in enumerate(zip(vectors, labels)):
      yield index, {"vector": vector, "label": int(label)}
