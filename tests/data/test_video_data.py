"""Moving Fashion-MNIST (ssl_jax/data/builders/moving_fashion_mnist.py): the bounce by hand,
each frame the item pasted where the trajectory says, and the prepared dataset rebuilt
bitwise from its seed on the test subset of Fashion-MNIST."""
import numpy as np

import conftest
from ssl_jax.data import prepare, sources
from ssl_jax.data.builders import moving_fashion_mnist as moving


class FixedDraws:
  """A stand-in generator: the start position and angle a test chooses."""

  def __init__(self, position, angle):
    self.position, self.angle = np.asarray(position, float), angle

  def uniform(self, low, high, size=None):
    return self.position if size == 2 else self.angle


def test_the_item_bounces_off_the_walls_by_hand():
  limit = moving.CANVAS - moving.ITEM  # 20
  # Angle 0 moves the columns by +3: 19 -> 22 reflects to 2 * 20 - 22 = 18, then back.
  path = moving.trajectory(FixedDraws((5.0, 19.0), 0.0), frames=4)
  np.testing.assert_array_equal(path, [[5, 19], [5, 18], [5, 15], [5, 12]])
  # Angle -pi/2 moves the rows by -3: 1 -> -2 reflects to 2, then on to 5.
  path = moving.trajectory(FixedDraws((1.0, 10.0), -np.pi / 2), frames=3)
  np.testing.assert_array_equal(path, [[1, 10], [2, 10], [5, 10]])
  # Angle pi moves the columns by -3: 2 -> -1 reflects to 1, then 4.
  path = moving.trajectory(FixedDraws((7.0, 2.0), np.pi), frames=3)
  np.testing.assert_array_equal(path, [[7, 2], [7, 1], [7, 4]])
  rng = np.random.default_rng(0)
  for _ in range(50):  # any start: inside the canvas, at most the speed per frame per axis
    path = moving.trajectory(rng, frames=20)
    assert path.min() >= 0 and path.max() <= limit
    assert np.abs(np.diff(path, axis=0)).max() <= np.ceil(moving.SPEED) + 1


def test_each_frame_is_the_item_at_its_position():
  item = np.arange(28 * 28, dtype=np.int64).reshape(28, 28, 1) % 250 + 1
  video = moving.make_video(item.astype(np.uint8), np.random.default_rng(7))
  path = moving.trajectory(np.random.default_rng(7))
  assert video.shape == (moving.FRAMES, moving.CANVAS, moving.CANVAS, 1)
  for frame, (row, column) in zip(video, path):
    np.testing.assert_array_equal(frame[row:row + 28, column:column + 28], item)
    assert frame.sum() == item.sum()  # nothing else on the canvas


def test_the_dataset_rebuilds_bitwise_from_its_seed(tiny_data_dir, tmp_path, monkeypatch):
  del tiny_data_dir  # only its IDX subset directory, set below, is read
  monkeypatch.setenv("SSL_JAX_FASHION_MNIST_DIR", str(conftest.FASHION_MNIST_DIR))
  monkeypatch.setattr(moving, "VIDEOS", {"train": 40, "test": 12})
  built = []
  for copy in ("a", "b"):
    data_dir = str(tmp_path / copy)
    prepare.prepare("moving_fashion_mnist", data_dir)
    train = sources.get_source("moving_fashion_mnist", "train", data_dir)
    built.append([train[i] for i in range(len(train))])
  assert len(built[0]) == 40
  images, labels = conftest.reference_subset("train")
  for index, (first, second) in enumerate(zip(*built)):
    np.testing.assert_array_equal(first["video"], second["video"])
    assert first["label"] == second["label"] == labels[index]
    want = moving.make_video(images[index][..., None], moving.video_rng("train", index))
    np.testing.assert_array_equal(first["video"], want)
