"""The run directory (workdir): the one module that knows its file names.

    W/config.json        the run's config, written at every start (core of a resume check)
    W/metrics.jsonl      one {"step": s, **metrics} record per log, appended across resumes
    W/tensorboard/       the same scalars for TensorBoard
    W/checkpoints/       orbax steps (training/checkpoint.py)
    W/eval/<mode>.json   one report per evaluator (ssl_jax/evaluate.py)
    W/lock.json          held by a training run while it runs (one run per workdir)

The workdir may be a local path or a URL (gs://bucket/run): every file goes through
core/paths.py. Only process 0 writes; readers tolerate what a crash leaves (a half-written
last line).
"""
import json
import os
import socket
import sys
import time

import jax
import ml_collections

from ssl_jax.core import errors, paths

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
EVAL = "eval"
LOCK = "lock.json"
# A lock another host holds counts as abandoned when its owner has not refreshed it (at
# every log step) for this long; on its own host, as soon as its process is gone.
LOCK_STALE_SECONDS = 30 * 60


def config_path(workdir: str) -> str:
  return paths.join(workdir, CONFIG)


def metrics_path(workdir: str) -> str:
  return paths.join(workdir, METRICS)


def tensorboard_path(workdir: str) -> str:
  return paths.join(workdir, TENSORBOARD)


def eval_path(workdir: str, mode: str) -> str:
  return paths.join(workdir, EVAL, f"{mode}.json")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    paths.makedirs(workdir)
    paths.write_text(config_path(workdir), config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict | None:
  """W/config.json as a plain dict; None when the file is absent. A damaged file raises
  ValueError (json's), for the caller to word."""
  path = config_path(workdir)
  if not paths.exists(path):
    return None
  return json.loads(paths.read_text(path))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config; errors.RunNotFoundError when `workdir` holds no run."""
  saved = read_config(workdir)
  if saved is None:
    raise errors.RunNotFoundError(f"{config_path(workdir)} not found: is {workdir!r} the "
                                  "workdir of a training run?")
  return ml_collections.ConfigDict(saved)


def read_metrics(workdir: str) -> list[dict]:
  """The records of W/metrics.jsonl (a line cut short by a crash is skipped)."""
  path = metrics_path(workdir)
  if not paths.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a pretraining workdir?")
  records = []
  for line in paths.read_text(path).splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      pass
  return records


def has_metrics(workdir: str) -> bool:
  return paths.exists(metrics_path(workdir))


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics.jsonl records after `step`: a run resumed from an older checkpoint than
  its last log (a fallback past a damaged step) logs those steps again, once."""
  path = metrics_path(workdir)
  if jax.process_index() != 0 or not paths.exists(path):
    return
  lines = paths.read_text(path).splitlines(keepends=True)
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # a line cut short by a crash mid-write
  if len(kept) != len(lines):
    paths.write_text(path, "".join(kept))


def check_eval_writable(workdir: str) -> None:
  """WorkdirError now, before minutes of evaluation, if W/eval/ cannot be written (it is
  left as it was: a probe file is written and removed, a directory made for it too)."""
  if jax.process_index() != 0:
    return
  directory = paths.join(workdir, EVAL)
  existed = paths.isdir(directory)
  probe = paths.join(directory, f".write-test-{os.getpid()}")
  try:
    paths.makedirs(directory)
    paths.write_text(probe, "")
    paths.remove(probe)
    if not existed and not paths.is_remote(directory):
      os.rmdir(directory)
  except OSError as error:
    raise errors.WorkdirError(f"cannot write the scores to {directory}: {_reason(error)}; "
                              "make the workdir writable (or copy it somewhere writable) and "
                              "evaluate again") from None


def write_eval(workdir: str, mode: str, report: dict) -> None:
  if jax.process_index() == 0:
    paths.makedirs(paths.join(workdir, EVAL))
    paths.write_text(eval_path(workdir, mode), json.dumps(report, indent=2))


def read_evals(workdir: str) -> dict:
  """{mode: report} from W/eval/*.json (empty when the run was not evaluated)."""
  directory = paths.join(workdir, EVAL)
  return {name[:-len(".json")]: json.loads(paths.read_text(paths.join(directory, name)))
          for name in paths.listdir(directory) if name.endswith(".json")}


def lock_path(workdir: str) -> str:
  return paths.join(workdir, LOCK)


def _reason(error: OSError) -> str:
  return error.strerror or str(error) or type(error).__name__


class WorkdirLock:
  """One training run per workdir: W/lock.json names the owner (host, pid, start, command),
  created exclusively (paths.create_exclusive: atomic on a local disk and on GCS), rewritten
  at every log step, removed when the run ends. A second run refuses with one line naming
  the owner. A lock whose owner died is taken over: on its own host, as soon as its process
  is gone; from another host, once it has not been rewritten for LOCK_STALE_SECONDS. Of two
  runs taking over the same dead lock, one wins (paths.remove_if_unchanged). Only process 0
  of a multi-host run holds it."""

  def __init__(self, workdir: str):
    self.path = lock_path(workdir)
    self.held = False
    if jax.process_index() != 0:
      return
    if paths.exists(workdir) and not paths.isdir(workdir):
      raise errors.WorkdirError(f"--workdir {workdir} is a file, not a folder; choose "
                                "another --workdir")
    self._made_workdir = not paths.is_remote(workdir) and not os.path.exists(workdir)
    self._workdir = workdir
    try:
      paths.makedirs(workdir)
    except OSError as error:
      raise errors.WorkdirError(f"cannot create the workdir {workdir}: {_reason(error)}; "
                                "choose a writable --workdir") from None
    self._owner = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    for _ in range(3):
      try:
        created = paths.create_exclusive(self.path, json.dumps(self._owner))
      except errors.UserError:
        raise
      except OSError as error:
        raise errors.WorkdirError(f"cannot write to the workdir {workdir}: {_reason(error)}; "
                                  "choose a writable --workdir") from None
      if created:
        self.held = True
        return
      self._take_over_or_refuse(workdir)
    raise errors.WorkdirError(f"{self.path}: other runs keep taking this workdir")

  def _take_over_or_refuse(self, workdir: str) -> None:
    token = paths.version(self.path)
    if token is None:
      return  # released meanwhile: try again
    try:
      owner = json.loads(paths.read_text(self.path))
      age = paths.age_seconds(self.path)
    except FileNotFoundError:
      return
    except (OSError, ValueError):
      owner, age = {}, float("inf")  # unreadable: a crash mid-write
    if not _abandoned(owner, age):
      raise errors.WorkdirError(
          f"{workdir} is in use by another run: pid {owner.get('pid')} on "
          f"{owner.get('host')}, started {owner.get('started')} ({owner.get('command')}). Wait "
          f"for it, stop it, or use another --workdir; if it is dead, delete {self.path}.")
    paths.remove_if_unchanged(self.path, token)  # loses to a run that took it meanwhile

  def refresh(self) -> None:
    """Marks the run alive (rewrites the lock, which renews its modification time)."""
    if self.held:
      try:
        paths.write_text(self.path, json.dumps(self._owner))
      except OSError:
        pass  # a full disk is reported by the checkpoint that needs the space

  def release(self) -> None:
    """Removes the lock, and the workdir too if this run created it and wrote nothing
    else (a run stopped by a bad dataset or split leaves no empty folder behind)."""
    if self.held:
      try:
        paths.remove(self.path)
        if self._made_workdir and not os.listdir(self._workdir):
          os.rmdir(self._workdir)
      except OSError:
        pass
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
