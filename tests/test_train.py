"""The engine end to end: 8 devices vs 1, exact resume, SIGTERM, restore on a new
device count, config errors. Each device count runs in its own process (tests/train_worker.py)
because XLA_FLAGS must be set before jax is imported."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "train_worker.py")


def _env(tmp_cache):
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  # Processes compiling the same program share it through the persistent cache.
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_cache)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return env


def run_worker(mode, data_dir, out, cache, devices=1, **kwargs):
  command = [sys.executable, WORKER, mode, "--devices", str(devices), "--data_dir", data_dir,
             "--out", str(out)]
  for key, value in kwargs.items():
    command += [f"--{key}", str(value)]
  result = subprocess.run(command, env=_env(cache), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return dict(np.load(out)), result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


def test_eight_devices_match_one_device(tiny_data_dir, tmp_path, cache):
  one, _ = run_worker("one_step", tiny_data_dir, tmp_path / "one.npz", cache, devices=1)
  eight, _ = run_worker("one_step", tiny_data_dir, tmp_path / "eight.npz", cache, devices=8)
  assert_same_step(eight, one)


def assert_same_step(got, want):
  """`one_step` results (views, loss, gradients, new BatchNorm statistics) agree."""
  assert set(got) == set(want)
  # Augmentation is keyed per example, so the views agree up to float rounding.
  np.testing.assert_allclose(got["views"], want["views"], atol=1e-5)
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
  names = [k for k in want if k.startswith(("grads", "extra"))]
  assert any("batch_stats" in k for k in names) and any(k.startswith("grads") for k in names)
  for name in names:
    scale = np.abs(want[name]).max() + 1e-12
    np.testing.assert_allclose(got[name] / scale, want[name] / scale, atol=2e-5, err_msg=name)
  # The batch statistics moved away from their init (mean 0, var 1): they are global ones.
  means = [k for k in names if k.endswith("['mean']")]
  assert means and max(np.abs(want[k]).max() for k in means) > 1e-3


def _params(result):
  return {k: v for k, v in result.items() if k.startswith(("params", "extra"))}


def test_exact_resume_is_bitwise(tiny_data_dir, tmp_path, cache):
  full, _ = run_worker("train", tiny_data_dir, tmp_path / "full.npz", cache,
                       workdir=tmp_path / "full", steps=6)
  run_worker("train", tiny_data_dir, tmp_path / "half.npz", cache, workdir=tmp_path / "split", steps=6,
             stop_at=3)
  resumed, log = run_worker("train", tiny_data_dir, tmp_path / "resumed.npz", cache,
                            workdir=tmp_path / "split", steps=6)
  assert "resumed from" in log and "at step 3" in log
  assert int(full["step"]) == int(resumed["step"]) == 6
  for name, value in _params(full).items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  # The resumed run appended to the same metrics file: steps 1..6 once each.
  steps = [json.loads(line)["step"] for line in open(tmp_path / "split" / "metrics.jsonl")
           if "loss" in line]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_sigterm_saves_and_resume_is_exact(tiny_data_dir, tmp_path, cache):
  full, _ = run_worker("train", tiny_data_dir, tmp_path / "full.npz", cache,
                       workdir=tmp_path / "full", steps=8)
  workdir = tmp_path / "preempted"
  command = [sys.executable, WORKER, "train", "--devices", "1", "--data_dir", tiny_data_dir,
             "--out", str(tmp_path / "never.npz"), "--workdir", str(workdir), "--steps", "8",
             "--sleep_per_step", "0.7"]
  process = subprocess.Popen(command, env=_env(cache), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  assert "SIGTERM" in stderr
  saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
  assert saved and 3 <= saved[-1] < 8, saved
  resumed, log = run_worker("train", tiny_data_dir, tmp_path / "resumed.npz", cache,
                            workdir=workdir, steps=8)
  assert f"at step {saved[-1]}" in log
  for name, value in _params(full).items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_restore_onto_a_different_device_count(tiny_data_dir, tmp_path, cache):
  """Saved on 1 device after 5 steps, resumed on 8 for the 6th: the same run numerically."""
  full, _ = run_worker("train", tiny_data_dir, tmp_path / "full.npz", cache,
                       workdir=tmp_path / "full", steps=6)
  run_worker("train", tiny_data_dir, tmp_path / "half.npz", cache, workdir=tmp_path / "moved", steps=6,
             stop_at=5)
  resumed, log = run_worker("train", tiny_data_dir, tmp_path / "resumed.npz", cache, devices=8,
                            workdir=tmp_path / "moved", steps=6)
  assert "at step 5" in log
  for name, value in _params(full).items():
    scale = np.abs(value).max() + 1e-12
    # One step on 8 devices: reductions round differently, so not bitwise (LARS amplifies
    # that over several steps); a wrong data order or a bad restore shows up as O(0.1).
    np.testing.assert_allclose(resumed[name] / scale, value / scale, atol=1e-4, err_msg=name)
