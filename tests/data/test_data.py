"""Tests of the data path: offline builder, sources, prepare CLI, grain loaders.

Most tests use a synthetic Fashion-MNIST-shaped dataset (520 train / 130 test)
written as IDX files and built through the real builder: each image carries
its own index in pixels (0, 0) and (0, 1), so a test can tell exactly which
records a batch holds. Tests marked by the `real_data_dir` fixture build the
real Debian files (about 4 s) and skip where the package is not installed.
"""

import gzip
import os
import pathlib
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from ssl_jax.data import pipeline, prepare, sources
from ssl_jax.data.builders import fashion_mnist_local

KEYS = ("image", "label")

NUM_TRAIN, NUM_TEST = 520, 130
REAL_IDX_DIR = pathlib.Path(fashion_mnist_local.DEFAULT_SOURCE_DIR)


def parse_idx_gz(path) -> np.ndarray:
  """An independent IDX reader: byte 3 is the rank, then big-endian dims."""
  with gzip.open(path, "rb") as f:
    raw = f.read()
  ndim = raw[3]
  shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx_gz(path, array: np.ndarray) -> None:
  header = bytes([0, 0, 8, array.ndim]) + b"".join(
      d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def record_ids(images: np.ndarray) -> np.ndarray:
  """The index each synthetic image carries in pixels (0, 0) and (0, 1)."""
  return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 1, 0].astype(int)


def synthetic_split(count: int, seed: int):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
  images[:, 0, 0], images[:, 0, 1] = np.arange(count) % 256, np.arange(count) // 256
  return images, rng.integers(0, 10, count, dtype=np.uint8)


def build_with_idx_dir(idx_dir, data_dir):
  previous = os.environ.get(fashion_mnist_local.SOURCE_DIR_ENV)
  os.environ[fashion_mnist_local.SOURCE_DIR_ENV] = str(idx_dir)
  try:
    prepare.prepare("fashion_mnist", str(data_dir))
  finally:
    if previous is None:
      del os.environ[fashion_mnist_local.SOURCE_DIR_ENV]
    else:
      os.environ[fashion_mnist_local.SOURCE_DIR_ENV] = previous


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
  """(data_dir, {split: (images [N,28,28], labels [N])}) of the synthetic set."""
  root = tmp_path_factory.mktemp("synthetic_fashion_mnist")
  reference = {}
  for split, prefix, count in (("train", "train", NUM_TRAIN),
                               ("test", "t10k", NUM_TEST)):
    images, labels = synthetic_split(count, seed=count)
    write_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    # Parse back independently, so the reference is what the files hold.
    reference[split] = (
        parse_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz"),
        parse_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz"))
  build_with_idx_dir(root, root / "tfds")
  return str(root / "tfds"), reference


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory):
  if not (REAL_IDX_DIR / "train-images-idx3-ubyte.gz").exists():
    pytest.skip(f"no IDX files in {REAL_IDX_DIR}: "
                f"{fashion_mnist_local.INSTALL_HINT}")
  data_dir = tmp_path_factory.mktemp("real_fashion_mnist")
  start = time.perf_counter()
  build_with_idx_dir(REAL_IDX_DIR, data_dir)
  print(f"\nbuilt real Fashion-MNIST in {time.perf_counter() - start:.1f}s")
  return str(data_dir)


@pytest.fixture
def two_processes(monkeypatch):
  """Pretends to be one of 2 JAX processes; call the result with the index."""
  def become(index):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: index)
  return become


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


# --- builder and sources --------------------------------------------------


def test_real_files_match_direct_idx_parse(real_data_dir):
  info = sources.dataset_info("fashion_mnist", real_data_dir)
  assert info.num_classes == 10 and info.image_shape == (28, 28, 1)
  assert info.split_sizes == {"train": 60000, "test": 10000}
  for split, prefix, count in (("train", "train", 300), ("test", "t10k", 10000)):
    images = parse_idx_gz(REAL_IDX_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = parse_idx_gz(REAL_IDX_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    source = sources.get_source("fashion_mnist", split, real_data_dir)
    records = source.__getitems__(list(range(count)))
    np.testing.assert_array_equal(
        np.stack([r["image"] for r in records]), images[:count, :, :, None])
    np.testing.assert_array_equal([r["label"] for r in records], labels[:count])
    assert records[0]["image"].dtype == np.uint8


def test_real_train_split_reads_in_seconds(real_data_dir):
  source = sources.get_source("fashion_mnist", "train", real_data_dir)
  start = time.perf_counter()
  batches = list(pipeline.train_loader(keys=KEYS, source=
      source, global_batch_size=256, seed=0, num_epochs=1))
  train_seconds = time.perf_counter() - start
  start = time.perf_counter()
  seen = sum(int(b["mask"].sum())
             for b in pipeline.eval_batches(keys=KEYS, source=source, batch_size=256))
  eval_seconds = time.perf_counter() - start
  print(f"\n60000 records, batch 256: train_loader {train_seconds:.1f}s, "
        f"eval_batches {eval_seconds:.1f}s")
  assert len(batches) == 60000 // 256 and seen == 60000
  assert train_seconds < 60 and eval_seconds < 60


def test_synthetic_records_match_idx_and_info(synthetic):
  data_dir, reference = synthetic
  for split in ("train", "test"):
    images, labels = reference[split]
    source = sources.get_source("fashion_mnist", split, data_dir)
    assert len(source) == len(labels)
    for i in (0, 1, len(labels) - 1):
      np.testing.assert_array_equal(source[i]["image"], images[i][..., None])
      assert source[i]["label"] == labels[i]
  info = sources.dataset_info("fashion_mnist", data_dir)
  assert info == sources.DatasetSummary(
      name="fashion_mnist_local", num_classes=10, image_shape=(28, 28, 1),
      split_sizes={"train": NUM_TRAIN, "test": NUM_TEST})


def test_split_slicing(synthetic):
  data_dir, _ = synthetic
  head = sources.get_source("fashion_mnist", "train[:90%]", data_dir)
  tail = sources.get_source("fashion_mnist", "train[90%:]", data_dir)
  assert len(head) + len(tail) == NUM_TRAIN and len(tail) == NUM_TRAIN // 10
  assert tail[0]["image"][0, 0, 0] == len(head) % 256  # Slices keep IDX order.
  with pytest.raises(ValueError, match="validation"):
    sources.get_source("fashion_mnist", "validation", data_dir)


def test_catalogue_style_builder_uses_same_path(tmp_path):
  """A non-aliased TFDS builder goes through prepare/get_source unchanged."""

  class SslJaxToyCatalogue(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8,
                                        encoding="bytes"),
          "label": tfds.features.ClassLabel(num_classes=3),
          "file_name": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(12)}

    def _generate_examples(self, count):
      for i in range(count):
        yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i % 3,
                  "file_name": f"{i}.png"}

  prepare.prepare("ssl_jax_toy_catalogue", str(tmp_path))
  info = sources.dataset_info("ssl_jax_toy_catalogue", str(tmp_path))
  assert (info.num_classes, info.image_shape, info.split_sizes) == (
      3, (4, 4, 3), {"train": 12})
  source = sources.get_source("ssl_jax_toy_catalogue", "train", str(tmp_path))
  batch = next(iter(pipeline.train_loader(keys=KEYS, source=source, global_batch_size=4, seed=0)))
  assert set(batch) == {"image", "label"}  # file_name strings are not batched.
  assert batch["image"].shape == (4, 4, 4, 3)


def test_missing_dataset_names_prepare_command(tmp_path):
  expected = f"python -m ssl_jax.data.prepare fashion_mnist --data_dir {tmp_path}"
  with pytest.raises(FileNotFoundError, match=expected):
    sources.get_source("fashion_mnist", "train", str(tmp_path))
  with pytest.raises(FileNotFoundError, match=expected):
    sources.dataset_info("fashion_mnist", str(tmp_path))
  with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset_xyz'"):
    sources.get_source("no_such_dataset_xyz", "train", str(tmp_path))


def test_missing_idx_files_name_apt_package(tmp_path, monkeypatch):
  monkeypatch.setenv(fashion_mnist_local.SOURCE_DIR_ENV, str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError,
                     match="apt-get install -y dataset-fashion-mnist"):
    prepare.prepare("fashion_mnist", str(tmp_path / "tfds"))
  assert not sources.get_builder("fashion_mnist", tmp_path / "tfds").is_prepared()


def test_prepare_is_idempotent_and_has_help(synthetic, capsys):
  data_dir, _ = synthetic
  assert prepare.main(["fashion_mnist", "--data_dir", data_dir]) == 0
  assert "already prepared" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(["--help"])
  assert exit_info.value.code == 0 and "--data_dir" in capsys.readouterr().out


# --- train_loader -----------------------------------------------------------


@pytest.fixture(scope="module")
def train_source(synthetic):
  return sources.get_source("fashion_mnist", "train", synthetic[0])


def test_loader_batches_have_dtypes_shapes_and_labels(train_source, synthetic):
  _, reference = synthetic
  batch = next(iter(pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=40,
                                          seed=0)))
  assert batch["image"].dtype == np.uint8 and batch["image"].shape == (40, 28, 28, 1)
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (40,)
  ids = record_ids(batch["image"])
  np.testing.assert_array_equal(batch["label"], reference["train"][1][ids])


def test_loader_order_is_a_function_of_seed_and_epoch(train_source):
  def epochs(seed):  # 520 / 40 = 13 batches per epoch, none dropped.
    batches = list(pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=40,
                                         seed=seed, num_epochs=2))
    assert len(batches) == 26
    ids = record_ids(np.concatenate([b["image"] for b in batches]))
    return ids[:NUM_TRAIN], ids[NUM_TRAIN:]

  first, second = epochs(seed=7)
  for epoch in (first, second):  # Every record exactly once per epoch.
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_TRAIN))
  assert not np.array_equal(first, second)  # Reshuffled each epoch.
  again = epochs(seed=7)
  np.testing.assert_array_equal(np.concatenate(again), np.concatenate([first, second]))
  other, _ = epochs(seed=8)
  assert not np.array_equal(first, other)


def test_finite_run_drops_only_the_last_partial_batch(train_source):
  batches = list(pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=64,
                                       seed=0, num_epochs=2))
  assert len(batches) == (2 * NUM_TRAIN) // 64  # Batches span epochs.


@pytest.mark.parametrize("skip", [3, 12])  # Mid-epoch, and across epochs.
def test_iterator_state_resumes_exact_sequence(train_source, skip):
  make = lambda: iter(pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=40,
                                            seed=3))
  iterator = make()
  take(iterator, skip)
  state = iterator.get_state()
  expected = take(iterator, 4)
  resumed = make()
  resumed.set_state(state)
  assert_same_batches(take(resumed, 4), expected)
  uninterrupted = make()
  assert_same_batches(take(uninterrupted, skip + 4)[skip:], expected)


def test_iterator_state_in_orbax_checkpoint(train_source, tmp_path):
  make = lambda: iter(pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=40,
                                            seed=5))
  iterator = make()
  take(iterator, 2)
  state = {"step": np.array(2, np.int32), "params": np.arange(3.0)}
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(2, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=pipeline.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = take(iterator, 3)

  fresh = make()
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state),
        data=pipeline.CheckpointRestore(fresh)))
  np.testing.assert_array_equal(restored.state["params"], state["params"])
  assert_same_batches(take(restored.data, 3), expected)


def test_process_shards_are_disjoint_halves(train_source, two_processes):
  ids = []
  for index in (0, 1):
    two_processes(index)
    batches = list(pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=40,
                                         seed=1, num_epochs=1))
    assert len(batches) == 13 and batches[0]["image"].shape[0] == 20
    ids.append(record_ids(np.concatenate([b["image"] for b in batches])))
  np.testing.assert_array_equal(np.sort(ids[0]), np.arange(NUM_TRAIN // 2))
  np.testing.assert_array_equal(np.sort(ids[1]),
                                np.arange(NUM_TRAIN // 2, NUM_TRAIN))


def test_bad_batch_sizes_raise(train_source, two_processes):
  for bad in (0, -8, 2.5):
    with pytest.raises(ValueError, match=f"global_batch_size={bad}"):
      pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=bad, seed=0)
  with pytest.raises(ValueError, match="fewer than one per-process batch"):
    pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=1024, seed=0)
  with pytest.raises(ValueError, match="seed=-1"):
    pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=8, seed=-1)
  with pytest.raises(ValueError, match="batch_size=0"):
    next(pipeline.eval_batches(keys=KEYS, source=train_source, batch_size=0))
  two_processes(0)
  with pytest.raises(ValueError, match=r"global_batch_size=3 .*process_count\(\)=2"):
    pipeline.train_loader(keys=KEYS, source=train_source, global_batch_size=3, seed=0)


def test_worker_processes_give_the_same_stream_and_state(train_source):
  """Worker processes yield exactly the in-process batches in the same order, and their
  iterator state is the in-process one: a position saved with 2 workers resumes with 1,
  with none, and the other way round."""
  make = lambda workers: iter(pipeline.train_loader(keys=KEYS, source=
      train_source, global_batch_size=40, seed=2, worker_count=workers))
  expected = take(make(0), 5)
  plain = make(0)
  take(plain, 2)
  plain_state = plain.get_state()
  two, one = make(2), make(1)
  try:
    got = take(two, 2)
    state = two.get_state()
    got += take(two, 3)
    assert_same_batches(got, expected)
    assert state == plain_state == {"next_index": 2}
    one.set_state(state)
    assert_same_batches(take(one, 3), expected[2:])
    two.set_state(plain_state)  # a position set mid-stream discards what was read ahead
    assert_same_batches(take(two, 1), expected[2:3])
  finally:
    two.close()
    one.close()
  resumed = make(0)
  resumed.set_state(state)
  assert_same_batches(take(resumed, 3), expected[2:])


def test_worker_errors_reach_the_consumer(train_source):
  broken = pipeline.train_loader(keys=("image", "no_such_feature"), source=train_source,
                                 global_batch_size=40, seed=2, worker_count=1)
  iterator = iter(broken)
  try:
    with pytest.raises(KeyError, match="no_such_feature"):
      next(iterator)
  finally:
    iterator.close()


# --- eval_batches -----------------------------------------------------------


@pytest.mark.parametrize("process_count,batch_size", [(1, 32), (2, 32), (3, 43)])
def test_eval_batches_cover_split_once(synthetic, monkeypatch, process_count,
                                       batch_size):
  data_dir, reference = synthetic
  source = sources.get_source("fashion_mnist", "test", data_dir)
  monkeypatch.setattr(jax, "process_count", lambda: process_count)
  per_process = []
  for index in range(process_count):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    per_process.append(list(pipeline.eval_batches(keys=KEYS, source=source, batch_size=batch_size)))
  # Equal batch counts, so collective eval steps line up across processes.
  assert len({len(batches) for batches in per_process}) == 1
  ids, labels = [], []
  for batches in per_process:
    for batch in batches:
      assert batch["image"].shape == (batch_size, 28, 28, 1)
      assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
      mask = batch["mask"]  # Valid rows first, then padding.
      np.testing.assert_array_equal(mask, np.arange(batch_size) < mask.sum())
      assert not batch["image"][~mask].any() and not batch["label"][~mask].any()
      ids.append(record_ids(batch["image"][mask]))
      labels.append(batch["label"][mask])
  ids = np.concatenate(ids)
  np.testing.assert_array_equal(ids, np.arange(NUM_TEST))  # In order, once.
  np.testing.assert_array_equal(np.concatenate(labels), reference["test"][1])


def test_fit_image_centre_crops_and_resizes():
  """Variable-size images (ImageNet) are fitted on the host to one square shape."""
  from ssl_jax.data.preprocess import fit_image
  image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
  # The shorter side already equals the size: a pure centre crop, checked by slicing.
  np.testing.assert_array_equal(fit_image(image, 16), image[:, 4:20])
  resized = fit_image(image, 8)
  assert resized.shape == (8, 8, 3) and resized.dtype == np.uint8
  grey = fit_image(image[..., :1], 12)
  assert grey.shape == (12, 12, 1)
