"""Running tests/helpers/train_worker.py and fsdp_worker.py in their own processes: each
device count needs its own process, because XLA_FLAGS must be set before jax is imported."""
import os
import subprocess
import sys

import numpy as np

HELPERS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HELPERS))
WORKER = os.path.join(HELPERS, "train_worker.py")
FSDP_WORKER = os.path.join(HELPERS, "fsdp_worker.py")


def worker_env(tmp_cache):
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  # Processes compiling the same program share it through the persistent cache.
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_cache)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return env


def run_worker(mode, data_dir, out, cache, devices=1, **kwargs):
  """Runs train_worker.py MODE; kwargs become --key value flags (True: --key)."""
  command = [sys.executable, WORKER, mode, "--devices", str(devices), "--data_dir", data_dir,
             "--out", str(out)]
  for key, value in kwargs.items():
    command += [f"--{key}"] if value is True else [f"--{key}", str(value)]
  result = subprocess.run(command, env=worker_env(cache), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return dict(np.load(out)), result.stderr


def model_fields(result):
  """The params and method_state entries of a worker's flattened output."""
  return {k: v for k, v in result.items() if k.startswith(("params", "method_state"))}
