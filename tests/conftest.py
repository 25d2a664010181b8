"""Shared fixtures: a small real Fashion-MNIST subset prepared as a TFDS dataset, next to
the real fortune corpus and a small tokenizer for the text methods.

The subset (the first 512 train and 256 test images of the Debian IDX files) is
written as IDX files and built through the same offline builder the demo uses, so the
tests exercise the real data path in seconds.
"""
import gzip
import os
import pathlib
import struct
import sys

import numpy as np
import pytest

# The suite compiles many small programs and runs each for a few steps: XLA's backend
# optimisations cost more time than they save here (a test worker's run takes ~half the
# time without them). Set before jax is imported; test subprocesses inherit it. Numerics
# stay deterministic, and every comparison runs both sides under the same setting.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()
# Every entrypoint imports ssl_jax before jax, which adds its XLA:CPU flags (ssl_jax/
# __init__.py); so does the suite, so that in-process runs compute exactly what the
# experiment processes they are compared with compute.
import ssl_jax  # noqa: E402,F401
from ssl_jax.core import host_malloc  # noqa: E402

# The project's commands run under tcmalloc (ssl_jax/core/host_malloc.py); so do the test
# processes that pytest-xdist starts from here, and every subprocess, which inherit
# LD_PRELOAD (the commands they run then need no re-execution).
_TCMALLOC = host_malloc.chosen_library()
if _TCMALLOC and os.path.isfile(_TCMALLOC):
  os.environ["LD_PRELOAD"] = host_malloc.with_preload(_TCMALLOC, os.environ.get("LD_PRELOAD"))

# Shared test helpers (references, comparison rules, worker processes) live in tests/helpers/
# and are imported by name from every test folder.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "helpers"))

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
  """A TFDS data_dir holding `fashion_mnist` with 512 train / 256 test real images, the
  same items as captions and as moving videos, and the fortune texts."""
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
    from ssl_jax.data import prepare, text
    prepare.prepare("fashion_mnist", data_dir)
    # The same images with captions (CLIP's contract data) and their tokenizer.
    prepare.prepare("fashion_mnist_captions", data_dir)
    # The same items as videos (the video methods' contract data): 512 train, 256 test.
    prepare.prepare("moving_fashion_mnist", data_dir)
    text.main(["fashion_mnist_captions", "--feature", "caption", "--vocab_size", "256",
               "--data_dir", data_dir])
  finally:
    if previous is None:
      os.environ.pop("SSL_JAX_FASHION_MNIST_DIR")
    else:
      os.environ["SSL_JAX_FASHION_MNIST_DIR"] = previous
  # The text methods' contract data: the whole real fortune corpus (it builds in about a
  # second; smoke configs read a slice) and the smoke runs' small tokenizer.
  from ssl_jax.data import text
  from ssl_jax.data.builders import fortunes
  if not (fortunes.source_dir() / "fortunes").exists():
    pytest.fail(f"fortune files missing in {fortunes.source_dir()}: run scripts/setup.sh "
                f"({fortunes.INSTALL_HINT})")
  from experiments import common
  prepare.prepare("fortunes", data_dir)
  name, vocab_size = common.SMOKE_TOKENIZER
  text.main(["fortunes", "--vocab_size", str(vocab_size), "--name", name, "--data_dir", data_dir])
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
  yield path


@pytest.fixture(scope="session")
def smoke_run(tiny_data_dir, tmp_path_factory, compilation_cache):
  """NAME -> (workdir, finished process) of `python -m experiments.NAME --dataset D
  --smoke`, D the experiment's contract dataset (experiments.common.contract_dataset:
  Fashion-MNIST unless it says otherwise, whatever its default) on the tiny data, run once per session and shared: the experiment tests check its output,
  the method contract resumes it, the results-table test tabulates it. The process shares
  this session's compilation cache, so an in-process run of its config compiles nothing."""
  import subprocess
  import sys
  root, runs = tmp_path_factory.mktemp("smoke_runs"), {}
  repo = str(pathlib.Path(__file__).resolve().parent.parent)
  env = dict(os.environ, PYTHONPATH=repo, JAX_COMPILATION_CACHE_DIR=compilation_cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

  def run(name: str):
    if name not in runs:
      import importlib
      from experiments import common
      workdir = root / name
      dataset = common.contract_dataset(importlib.import_module(f"experiments.{name}"))
      runs[name] = workdir, subprocess.run(
          [sys.executable, "-m", f"experiments.{name}", "--dataset", dataset, "--smoke",
           "--workdir", str(workdir),
           f"--config.data.data_dir={tiny_data_dir}",
           # One device, as the test process that resumes the run in-process has
           # (a transformer's run would otherwise take one per core: cpu_devices.py).
           "--config.sharding.cpu_devices=1"],
          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    return runs[name]
  return run


# Independent per-method tests, spread over the workers one by one.
SPREAD_MODULES = {"test_method_contract.py"}
# The smoke runs the results table does not read: their tests form a second smoke group, so
# two workers build the session's smoke runs side by side (a test that names one of these
# methods neither as its `name`/`method` parameter nor with the `smoke_methods` marker
# still passes; it only makes its worker run that smoke run too).
SECOND_SMOKE_GROUP = {"clip", "clm", "colorization", "frame_order", "mlm"}


def pytest_configure(config):
  config.addinivalue_line("markers", "smoke_methods(*names): the smoke runs a test reads")


def _smoke_methods(item) -> set:
  params = getattr(getattr(item, "callspec", None), "params", {})
  named = {params[key] for key in ("name", "method") if isinstance(params.get(key), str)}
  marker = item.get_closest_marker("smoke_methods")
  return named | set(marker.args if marker else ())


# Groups that take longest on 2 cores (measured with --durations), handed out first and
# longest first, so that none is left to run alone at the end while the other worker
# idles; the rest follow in collection order, the one-test spread groups last as filler.
# (pytest.ini turns off xdist's own order, which sorts groups by their number of tests.)
LONGEST_GROUPS = ("smoke_runs", "smoke_runs_2", "test_sharding.py", "multihost_uninterrupted",
                  "multihost_jobs", "test_train.py", "test_reliability.py", "test_aot.py")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
  """Under pytest-xdist (--dist loadgroup), tests that share expensive fixtures run in one
  worker, so each fixture is built once per session rather than once per worker: every
  test using the smoke runs in one group, a test's own `xdist_group` marker where it has
  one, every other module's tests in a group of their own, except the independent
  per-method tests of SPREAD_MODULES (one group each)."""
  rank = {}
  for item in items:
    module = pathlib.Path(str(item.fspath)).name
    own = item.get_closest_marker("xdist_group")
    if "smoke_run" in getattr(item, "fixturenames", ()):
      methods = _smoke_methods(item)
      second = bool(methods) and methods <= SECOND_SMOKE_GROUP
      group = "smoke_runs_2" if second else "smoke_runs"
      item.add_marker(pytest.mark.xdist_group(group))
    elif own is not None:
      group = own.args[0] if own.args else own.kwargs["name"]
    elif module not in SPREAD_MODULES:
      group = module
      item.add_marker(pytest.mark.xdist_group(group))
    else:
      group = None
    rank[item.nodeid] = (LONGEST_GROUPS.index(group) if group in LONGEST_GROUPS else
                         len(LONGEST_GROUPS) + (group is None))
  items.sort(key=lambda item: rank[item.nodeid])  # stable: collection order within a rank
