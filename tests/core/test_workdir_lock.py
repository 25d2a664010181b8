"""One training run per workdir (core/rundir.WorkdirLock): a second run refuses in one line
naming the owner; a dead owner's lock is taken over; train refuses before writing. The same
on a bucket (gs://, a GCS emulator on 127.0.0.1), where the atomic steps are GCS's
generation preconditions."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ssl_jax.core import errors, paths, rundir
import gcs_emulator


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


def test_an_unknown_url_scheme_is_one_line(tmp_path, monkeypatch):
  from experiments import simclr
  from ssl_jax import train
  monkeypatch.chdir(tmp_path)
  with pytest.raises(errors.WorkdirError, match="nosuchscheme://bucket/run: .*use a local path"):
    train.train(simclr.get_config("fashion_mnist,smoke"), "nosuchscheme://bucket/run")
  assert os.listdir(tmp_path) == []  # no local folder named 'nosuchscheme:'


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "w").write_text("")
  with pytest.raises(errors.WorkdirError, match="is a file, not a folder"):
    rundir.WorkdirLock(str(tmp_path / "w"))


@pytest.fixture(scope="module")
def bucket():
  with gcs_emulator.running() as url:
    yield url


def test_a_bucket_lock_is_held_refused_released_and_taken_over(bucket):
  workdir = f"{bucket}/lock-journey"
  lock = rundir.WorkdirLock(workdir)
  owner = json.loads(paths.read_text(rundir.lock_path(workdir)))
  assert owner["pid"] == os.getpid()
  with pytest.raises(errors.WorkdirError, match=f"in use by another run: pid {os.getpid()}"):
    rundir.WorkdirLock(workdir)
  lock.refresh()
  lock.release()
  assert not paths.exists(rundir.lock_path(workdir))
  # A dead owner on this host, then a damaged lock: both taken over.
  paths.write_text(rundir.lock_path(workdir), json.dumps(
      {"host": socket.gethostname(), "pid": _dead_pid(), "started": "x", "command": "y"}))
  rundir.WorkdirLock(workdir).release()
  paths.write_text(rundir.lock_path(workdir), '{"host": "x", "pi')
  rundir.WorkdirLock(workdir).release()


def test_a_bucket_lock_of_another_host_is_taken_over_once_it_stops_being_rewritten(
    bucket, monkeypatch):
  workdir = f"{bucket}/lock-stale"
  paths.write_text(rundir.lock_path(workdir), json.dumps({"host": "tpu-vm-7", "pid": 1}))
  with pytest.raises(errors.WorkdirError, match="on tpu-vm-7"):
    rundir.WorkdirLock(workdir)
  monkeypatch.setattr(rundir, "LOCK_STALE_SECONDS", 1.0)
  time.sleep(1.5)
  rundir.WorkdirLock(workdir).release()


def test_on_gcs_of_two_racing_runs_one_gets_the_lock(bucket, monkeypatch):
  """The steps that make the lock safe are GCS's, not a check-then-write: a create that
  found no lock, and a removal of a stale lock someone else already replaced, both lose."""
  path = f"{bucket}/race/lock.json"
  assert paths.create_exclusive(path, "first")
  stale = paths.version(path)
  with monkeypatch.context() as patch:
    patch.setattr(paths, "exists", lambda _: False)  # both saw no lock
    assert not paths.create_exclusive(path, "second")
  assert paths.read_text(path) == "first"
  paths.write_text(path, "rewritten by its owner")
  assert not paths.remove_if_unchanged(path, stale)  # the version judged stale is gone
  assert paths.read_text(path) == "rewritten by its owner"
  assert paths.remove_if_unchanged(path, paths.version(path))
  assert not paths.exists(path)


def test_locally_a_stale_lock_is_removed_by_one_of_two_runs(tmp_path):
  path = str(tmp_path / "lock.json")
  assert paths.create_exclusive(path, "first") and not paths.create_exclusive(path, "again")
  token = paths.version(path)
  assert paths.remove_if_unchanged(path, token)
  assert not paths.remove_if_unchanged(path, token)


def test_a_workdir_the_lock_created_is_removed_when_nothing_else_was_written(tmp_path):
  fresh, existing = tmp_path / "fresh", tmp_path / "existing"
  existing.mkdir()
  rundir.WorkdirLock(str(fresh)).release()
  rundir.WorkdirLock(str(existing)).release()
  assert not fresh.exists() and existing.is_dir()
  kept = rundir.WorkdirLock(str(fresh))
  (fresh / "metrics.jsonl").write_text("")
  kept.release()
  assert os.listdir(fresh) == ["metrics.jsonl"]


def test_an_unknown_dataset_leaves_no_workdir(tmp_path):
  from experiments import simclr
  from ssl_jax import train
  config = simclr.get_config("fashion_mnist,smoke")
  config.data.name = "no_such_dataset"
  with pytest.raises(errors.ConfigError, match="Unknown dataset 'no_such_dataset'"):
    train.train(config, str(tmp_path / "w"))
  assert os.listdir(tmp_path) == []
