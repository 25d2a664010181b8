"""The run directory (workdir): the one module that knows its file names.

    W/config.json        the run's config, written at every start (core of a resume check)
    W/metrics.jsonl      one {"step": s, **metrics} record per log, appended across resumes
    W/tensorboard/       the same scalars for TensorBoard
    W/checkpoints/       orbax steps (training/checkpoint.py)
    W/eval/<mode>.json   one report per evaluator (ssl_jax/evaluate.py)
    W/lock.json          held by a training run while it runs (one run per workdir)

Only process 0 writes; readers tolerate what a crash leaves (a half-written last line).
"""
import contextlib
import json
import os
import socket
import sys
import time

import jax
import ml_collections

from ssl_jax.core import errors

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
EVAL = "eval"
LOCK = "lock.json"
# A lock another host holds counts as abandoned when its owner has not refreshed it (at
# every log step) for this long; on its own host, as soon as its process is gone.
LOCK_STALE_SECONDS = 30 * 60


def check_supported(workdir: str) -> None:
  """WorkdirError for a remote workdir (gs://, s3://): every file here goes through the
  local file system, so one would otherwise become a local folder named 'gs:'."""
  if "://" in str(workdir):
    raise errors.WorkdirError(
        f"--workdir {workdir}: remote workdirs are not supported yet; mount the bucket on "
        "every host (gcsfuse, or a Filestore NFS share) and pass the mount's local path")


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS)


def eval_path(workdir: str, mode: str) -> str:
  return os.path.join(workdir, EVAL, f"{mode}.json")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(config_path(workdir), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict | None:
  """W/config.json as a plain dict; None when the file is absent. A damaged file raises
  ValueError (json's), for the caller to word."""
  path = config_path(workdir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config; errors.RunNotFoundError when `workdir` holds no run."""
  check_supported(workdir)
  saved = read_config(workdir)
  if saved is None:
    raise errors.RunNotFoundError(f"{config_path(workdir)} not found: is {workdir!r} the "
                                  "workdir of a training run?")
  return ml_collections.ConfigDict(saved)


def read_metrics(workdir: str) -> list[dict]:
  """The records of W/metrics.jsonl (a line cut short by a crash is skipped)."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a pretraining workdir?")
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        pass
  return records


def has_metrics(workdir: str) -> bool:
  return os.path.exists(metrics_path(workdir))


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics.jsonl records after `step`: a run resumed from an older checkpoint than
  its last log (a fallback past a damaged step) logs those steps again, once."""
  path = metrics_path(workdir)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # a line cut short by a crash mid-write
  if len(kept) != len(lines):
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def check_eval_writable(workdir: str) -> None:
  """WorkdirError now, before minutes of evaluation, if W/eval/ cannot be written (it is
  left as it was: a probe file is written and removed, a directory made for it too)."""
  if jax.process_index() != 0:
    return
  directory = os.path.join(workdir, EVAL)
  existed = os.path.isdir(directory)
  probe = os.path.join(directory, f".write-test-{os.getpid()}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "w"):
      pass
    os.remove(probe)
    if not existed:
      os.rmdir(directory)
  except OSError as error:
    raise errors.WorkdirError(f"cannot write the scores to {directory}: {error.strerror}; "
                              "make the workdir writable (or copy it somewhere writable) and "
                              "evaluate again") from None


def write_eval(workdir: str, mode: str, report: dict) -> None:
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, EVAL), exist_ok=True)
    with open(eval_path(workdir, mode), "w") as f:
      json.dump(report, f, indent=2)


def read_evals(workdir: str) -> dict:
  """{mode: report} from W/eval/*.json (empty when the run was not evaluated)."""
  directory = os.path.join(workdir, EVAL)
  if not os.path.isdir(directory):
    return {}
  reports = {}
  for name in sorted(os.listdir(directory)):
    if name.endswith(".json"):
      with open(os.path.join(directory, name)) as f:
        reports[name[:-len(".json")]] = json.load(f)
  return reports


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, LOCK)


class WorkdirLock:
  """One training run per workdir: W/lock.json names the owner (host, pid, start, command),
  created exclusively, refreshed at every log step, removed when the run ends. A second
  run refuses with one line naming the owner; a lock whose owner died (its process is gone
  on this host, or it has not been refreshed for LOCK_STALE_SECONDS on another) is taken
  over. Only process 0 of a multi-host run holds it."""

  def __init__(self, workdir: str):
    check_supported(workdir)
    self.path = lock_path(workdir)
    self.held = False
    if jax.process_index() != 0:
      return
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as error:
      raise errors.WorkdirError(f"cannot create the workdir {workdir}: {error.strerror}; "
                                "choose a writable --workdir") from None
    owner = {"host": socket.gethostname(), "pid": os.getpid(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    for _ in range(3):
      try:
        with open(self.path, "x") as f:
          json.dump(owner, f)
        self.held = True
        return
      except FileExistsError:
        self._take_over_or_refuse(workdir)
      except OSError as error:
        raise errors.WorkdirError(f"cannot write to the workdir {workdir}: {error.strerror}; "
                                  "choose a writable --workdir") from None
    raise errors.WorkdirError(f"{self.path}: other runs keep taking this workdir")

  def _take_over_or_refuse(self, workdir: str) -> None:
    try:
      with open(self.path) as f:
        owner = json.load(f)
      age = time.time() - os.path.getmtime(self.path)
    except FileNotFoundError:
      return  # released meanwhile: try again
    except (OSError, ValueError):
      owner, age = {}, float("inf")  # unreadable: a crash mid-write
    if not _abandoned(owner, age):
      raise errors.WorkdirError(
          f"{workdir} is in use by another run: pid {owner.get('pid')} on "
          f"{owner.get('host')}, started {owner.get('started')} ({owner.get('command')}). Wait "
          f"for it, stop it, or use another --workdir; if it is dead, delete {self.path}.")
    stale = f"{self.path}.stale.{os.getpid()}"
    try:
      os.rename(self.path, stale)  # atomic: of two runs taking over, one wins
    except FileNotFoundError:
      return
    os.remove(stale)

  def refresh(self) -> None:
    """Marks the run alive (the lock's modification time)."""
    if self.held:
      with contextlib.suppress(OSError):
        os.utime(self.path)

  def release(self) -> None:
    if self.held:
      with contextlib.suppress(OSError):
        os.remove(self.path)
      self.held = False


def _abandoned(owner: dict, age_seconds: float) -> bool:
  if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
    try:
      os.kill(owner["pid"], 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      return False
    return False
  return age_seconds > LOCK_STALE_SECONDS
