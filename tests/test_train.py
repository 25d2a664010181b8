"""The engine end to end: SIGTERM, restore on a new device count (8 devices vs 1 and exact
resume for every method are in test_method_contract.py). Each device count runs in its own process (tests/train_worker.py)
because XLA_FLAGS must be set before jax is imported."""
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
  """Runs tests/train_worker.py MODE; kwargs become --key value flags."""
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


def assert_same_step(got, want):
  """`one_step` results (views, loss, gradients, new method_state) agree.

  Each gradient leaf may differ by 2e-5 of its scale plus 10x the larger of what a 1e-7
  relative change of the views does to it in `want`'s own run (the largest over
  train_worker's probes) and what reversing the examples' order does: at some test
  batches a float32 gradient is that sensitive to rounding (MoCo's tiny ResNet: 1.4e-5 of a BatchNorm scale's gradient),
  and a device count only changes the order of float32 sums. Real faults (per-device
  statistics, one device's negatives) are orders of magnitude larger.
  """
  def compared(result):
    return {k for k in result if not k.startswith(("perturbed_", "reordered_"))}
  assert compared(got) == compared(want)
  # Augmentation is keyed per example, so the views agree up to float rounding.
  for name in [k for k in want if k.startswith("views")]:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
  # atol for losses near 0 (SimSiam's mean cosine), where rtol alone judges cancellation.
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6, atol=1e-6)
  names = [k for k in want if k.startswith(("grads", "method_state"))]
  assert any(k.startswith("grads") for k in names)
  # Each leaf is compared at its own scale, floored at 1e-2 of the largest gradient: a
  # leaf that is zero in exact arithmetic (a bias a BatchNorm cancels) holds rounding noise.
  floor = 1e-2 * max(np.abs(want[k]).max() for k in names if k.startswith("grads"))
  for name in names:
    scale = max(np.abs(want[name]).max(), floor if name.startswith("grads") else 0.0) + 1e-12
    tolerance = 2e-5
    if name.startswith("grads"):
      sensitivity = np.abs(want["perturbed_" + name] - want[name]).max() / scale
      # Beyond this the gradient is discontinuous at the test batch and no comparison holds.
      assert sensitivity < 1e-3, f"{name}: a 1e-7 change of the views moves it {sensitivity:.1e}"
      # What adding the same terms in another order does (absent from a multi-process run).
      reorder = (np.abs(want["reordered_" + name] - want[name]).max() / scale
                 if "reordered_" + name in want else 0.0)
      tolerance += 10 * max(sensitivity, reorder)
    np.testing.assert_allclose(got[name] / scale, want[name] / scale, atol=tolerance,
                               err_msg=name)
  # Batch statistics, where the network has them, moved away from their init (mean 0,
  # var 1): they are global ones, and were compared above.
  means = [k for k in names if "batch_stats" in k and k.endswith("['mean']")]
  assert not means or max(np.abs(want[k]).max() for k in means) > 1e-3


def _params(result):
  return {k: v for k, v in result.items() if k.startswith(("params", "method_state"))}


@pytest.fixture(scope="module")
def full_run(tiny_data_dir, tmp_path_factory, cache):
  """An uninterrupted 8-step run on 1 device: the reference for the resumes below."""
  path = tmp_path_factory.mktemp("full_run")
  return run_worker("train", tiny_data_dir, path / "full.npz", cache, workdir=path / "full",
                    steps=8)[0]


def test_sigterm_saves_and_resume_is_exact(tiny_data_dir, tmp_path, cache, full_run):
  full = full_run
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


def test_restore_onto_a_different_device_count(tiny_data_dir, tmp_path, cache, full_run):
  """Saved on 1 device after 7 steps, resumed on 8 for the 8th: the same run numerically."""
  run_worker("train", tiny_data_dir, tmp_path / "half.npz", cache, workdir=tmp_path / "moved", steps=8,
             stop_at=7)
  resumed, log = run_worker("train", tiny_data_dir, tmp_path / "resumed.npz", cache, devices=8,
                            workdir=tmp_path / "moved", steps=8)
  assert "at step 7" in log
  for name, value in _params(full_run).items():
    scale = np.abs(value).max() + 1e-12
    # One step on 8 devices: reductions round differently, so not bitwise (LARS amplifies
    # that over several steps); a wrong data order or a bad restore shows up as O(0.1).
    np.testing.assert_allclose(resumed[name] / scale, value / scale, atol=1e-4, err_msg=name)
