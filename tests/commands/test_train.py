"""The engine end to end: SIGTERM, restore on a new device count (8 devices vs 1 and exact
resume for every method are in test_method_contract.py). Each device count runs in its own process (tests/helpers/train_worker.py)
because XLA_FLAGS must be set before jax is imported."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from workers import WORKER, model_fields, run_worker, worker_env


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


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
  process = subprocess.Popen(command, env=worker_env(cache), stdout=subprocess.PIPE,
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
  for name, value in model_fields(full).items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_restore_onto_a_different_device_count(tiny_data_dir, tmp_path, cache):
  """Saved on 1 device after 7 steps, resumed on 8 for the 8th: the checkpoint restores
  onto 8 devices bitwise, and the resumed step is bitwise the 8-device step from it on
  the batch a fresh stream gives at position 7 (that 8 devices compute what 1 does is
  test_method_contract's one-step comparison)."""
  half, _ = run_worker("train", tiny_data_dir, tmp_path / "half.npz", cache,
                       workdir=tmp_path / "moved", steps=8, stop_at=7)
  resumed, log = run_worker("train", tiny_data_dir, tmp_path / "resumed.npz", cache, devices=8,
                            workdir=tmp_path / "moved", steps=8, replay=True)
  assert "at step 7" in log and int(resumed["step"]) == 8
  saved = model_fields(half)
  assert saved
  for name, value in saved.items():
    np.testing.assert_array_equal(resumed["restored_" + name], value, err_msg=name)
    np.testing.assert_array_equal(resumed[name], resumed["replayed_" + name], err_msg=name)
  # The step did something: the last step moved every parameter leaf.
  moved = [name for name in saved if name.startswith("params")
           and not np.array_equal(resumed[name], saved[name])]
  assert moved and len(moved) == len([n for n in saved if n.startswith("params")])
