"""Shared fixtures: a small real Fashion-MNIST subset prepared as a TFDS dataset.

The subset (the first 512 train and 256 test images of the Debian IDX files) is
written as IDX files and built through the same offline builder the demo uses, so the
tests exercise the real data path in seconds.
"""
import gzip
import os
import pathlib
import struct

import numpy as np
import pytest

# The suite compiles many small programs and runs each for a few steps: XLA's backend
# optimisations cost more time than they save here (a test worker's run takes ~half the
# time without them). Set before jax is imported; test subprocesses inherit it. Numerics
# stay deterministic, and every comparison runs both sides under the same setting.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()

FASHION_MNIST_DIR = pathlib.Path(os.environ.get("SSL_JAX_FASHION_MNIST_DIR",
                                                "/usr/share/datasets/fashion-mnist"))
SUBSET = {"train": 512, "t10k": 256}


def _read_idx(path: pathlib.Path) -> np.ndarray:
  with gzip.open(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                     *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding `fashion_mnist` with 512 train / 256 test real images."""
  if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
    pytest.fail(f"Fashion-MNIST IDX files missing in {FASHION_MNIST_DIR}: run scripts/setup.sh "
                "(apt-get install -y dataset-fashion-mnist)")
  root = tmp_path_factory.mktemp("fashion_mnist_subset")
  idx_dir = root / "idx"
  idx_dir.mkdir()
  for prefix, count in SUBSET.items():
    for kind in ("images-idx3", "labels-idx1"):
      name = f"{prefix}-{kind}-ubyte.gz"
      _write_idx(idx_dir / name, _read_idx(FASHION_MNIST_DIR / name)[:count])
  data_dir = str(root / "tfds")
  previous = os.environ.get("SSL_JAX_FASHION_MNIST_DIR")
  os.environ["SSL_JAX_FASHION_MNIST_DIR"] = str(idx_dir)
  try:
    from ssl_jax.data import prepare
    prepare.prepare("fashion_mnist", data_dir)
  finally:
    if previous is None:
      os.environ.pop("SSL_JAX_FASHION_MNIST_DIR")
    else:
      os.environ["SSL_JAX_FASHION_MNIST_DIR"] = previous
  return data_dir


def reference_subset(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The subset's images [N,28,28] and labels, parsed straight from the IDX files."""
  prefix = {"train": "train", "test": "t10k"}[split]
  count = SUBSET[prefix]
  return (_read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")[:count],
          _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")[:count])


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """In-process runs of the same config compile once: later train() calls load the
  executable from this session's persistent cache (train() builds fresh jits each time)."""
  import jax
  path = str(tmp_path_factory.mktemp("jax_cache_in_process"))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
