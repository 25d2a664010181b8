"""One training run per workdir (core/rundir.WorkdirLock): a second run refuses in one line
naming the owner; a dead owner's lock is taken over; train refuses before writing."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ssl_jax.core import errors, rundir


def _write_lock(workdir, **owner):
  os.makedirs(workdir, exist_ok=True)
  with open(rundir.lock_path(workdir), "w") as f:
    json.dump({"host": socket.gethostname(), "started": "2026-12-04 10:00:00",
               "command": "python -m experiments.simclr", **owner}, f)


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_the_lock_is_held_refreshed_and_released(tmp_path):
  workdir = str(tmp_path / "w")
  lock = rundir.WorkdirLock(workdir)
  owner = json.load(open(rundir.lock_path(workdir)))
  assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
  os.utime(rundir.lock_path(workdir), (1, 1))
  lock.refresh()
  assert time.time() - os.path.getmtime(rundir.lock_path(workdir)) < 60
  with pytest.raises(errors.WorkdirError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
    rundir.WorkdirLock(workdir)
  lock.release()
  assert not os.path.exists(rundir.lock_path(workdir))
  rundir.WorkdirLock(workdir).release()  # free again


def test_a_live_owner_is_named_and_a_dead_one_is_taken_over(tmp_path):
  workdir = str(tmp_path / "w")
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _write_lock(workdir, pid=sleeper.pid)
    with pytest.raises(errors.WorkdirError) as refused:
      rundir.WorkdirLock(workdir)
    message = str(refused.value)
    assert f"pid {sleeper.pid}" in message and "python -m experiments.simclr" in message
    assert "\n" not in message and rundir.lock_path(workdir) in message
  finally:
    sleeper.kill()
  _write_lock(workdir, pid=_dead_pid())
  lock = rundir.WorkdirLock(workdir)
  assert json.load(open(rundir.lock_path(workdir)))["pid"] == os.getpid()
  lock.release()


def test_another_hosts_lock_is_abandoned_only_when_it_stopped_being_refreshed(tmp_path):
  workdir = str(tmp_path / "w")
  _write_lock(workdir, host="tpu-vm-7", pid=1)
  with pytest.raises(errors.WorkdirError, match="on tpu-vm-7"):
    rundir.WorkdirLock(workdir)
  old = time.time() - rundir.LOCK_STALE_SECONDS - 60
  os.utime(rundir.lock_path(workdir), (old, old))
  rundir.WorkdirLock(workdir).release()


def test_a_damaged_lock_file_is_taken_over(tmp_path):
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  with open(rundir.lock_path(workdir), "w") as f:
    f.write('{"host": "x", "pi')  # a crash mid-write
  rundir.WorkdirLock(workdir).release()


def test_an_unwritable_workdir_is_one_line(tmp_path):
  if os.geteuid() == 0:
    target = "/proc/ssl_jax_workdir"  # even root cannot create it
  else:
    os.chmod(tmp_path, 0o500)
    target = str(tmp_path / "w")
  with pytest.raises(errors.WorkdirError, match="choose a writable --workdir"):
    rundir.WorkdirLock(target)


def test_train_refuses_a_held_workdir_before_writing_anything(tmp_path):
  from experiments import simclr
  from ssl_jax import train
  workdir = str(tmp_path / "w")
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _write_lock(workdir, pid=sleeper.pid)
    with pytest.raises(errors.WorkdirError, match="in use by another run"):
      train.train(simclr.get_config("fashion_mnist,smoke"), workdir)
  finally:
    sleeper.kill()
  assert os.listdir(workdir) == [rundir.LOCK]


def test_a_remote_workdir_is_refused_in_one_line_before_anything_is_written(tmp_path,
                                                                           monkeypatch):
  from experiments import simclr
  from ssl_jax import evaluate, train
  monkeypatch.chdir(tmp_path)
  with pytest.raises(errors.WorkdirError, match="gs://bucket/run: remote workdirs"):
    train.train(simclr.get_config("fashion_mnist,smoke"), "gs://bucket/run")
  with pytest.raises(errors.WorkdirError, match="mount the bucket"):
    evaluate.run("gs://bucket/run", ["knn"])
  assert os.listdir(tmp_path) == []  # no local folder named 'gs:'
