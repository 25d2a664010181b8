"""Metric writers (JSONL + TensorBoard), a one-line progress report, and fail_cleanly (a user
error as one line).

Only process 0 writes; the others get no-op writers, so callers need no checks.
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Mapping

import jax
import numpy as np
from absl import logging as absl_logging

from ssl_jax.core import errors, paths, rundir


def quiet_libraries() -> None:
  """Keeps orbax/grain/tfds INFO chatter (a dozen lines per checkpoint) off the console."""
  absl_logging.set_verbosity(absl_logging.WARNING)


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.size == 1 else value.tolist()


@contextlib.contextmanager
def fail_cleanly():
  """Turns the errors a user can act on (core/errors.py: bad config values, config
  mismatch on resume, missing data, damaged checkpoints, divergence) into one line,
  `error: ...`, and exit status 1, not a traceback; an interrupt (Ctrl-C) into one line
  and exit status 130."""
  try:
    yield
  except errors.UserError as error:
    print(f"\nerror: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None
  except KeyboardInterrupt:
    # A second Ctrl-C during training, or one outside it: stop now, with no traceback.
    print("\ninterrupted: stopped at once, without saving; rerunning the same command "
          "resumes from the last checkpoint", file=sys.stderr, flush=True)
    raise SystemExit(130) from None


class MetricWriter:
  """Appends `{"step": s, **metrics}` lines to workdir/metrics.jsonl and TensorBoard scalars.

  Resuming a run appends to the same files, so the history of a preempted run is kept. In a
  bucket (gs://) each write rewrites metrics.jsonl whole (objects cannot grow), and the
  TensorBoard events are written to a local folder and copied up at each write.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._path = rundir.metrics_path(workdir)
    self._tensorboard_dir = rundir.tensorboard_path(workdir)
    self._local_events = None  # the local folder mirrored to a remote workdir
    self._tensorboard = None
    if not self.enabled:
      return
    paths.makedirs(workdir)
    try:
      from tensorboardX import SummaryWriter
    except ImportError:  # TensorBoard files are a convenience; JSONL is the record.
      return
    if paths.is_remote(workdir):
      self._local_events = tempfile.mkdtemp(prefix="ssl_jax_events_")
    self._tensorboard = SummaryWriter(self._local_events or self._tensorboard_dir)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    metrics = {k: _to_python(v) for k, v in metrics.items()}
    paths.append_lines(self._path, [json.dumps({"step": int(step), **metrics}) + "\n"])
    if self._tensorboard is not None:
      for name, value in metrics.items():
        if isinstance(value, (int, float)):
          self._tensorboard.add_scalar(name, value, step)
      self._tensorboard.flush()
      self._copy_events_up()

  def _copy_events_up(self) -> None:
    if self._local_events:
      for name in os.listdir(self._local_events):
        paths.write_bytes(paths.join(self._tensorboard_dir, name),
                          paths.read_bytes(os.path.join(self._local_events, name)))

  def close(self) -> None:
    if self._tensorboard:
      self._tensorboard.close()
      self._copy_events_up()
      if self._local_events:
        shutil.rmtree(self._local_events, ignore_errors=True)
      self._tensorboard = None


def _clock(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
  """Prints `step s/T | loss | input wait % | items/s | elapsed | ETA` to stderr at each report.

  On a terminal the line is redrawn in place; in a log file each report is a line.
  """

  def __init__(self, total_steps: int, items_per_step: int, start_step: int = 0,
               unit: str = "img", enabled: bool | None = None, stream=None):
    self.total_steps, self.items_per_step, self.unit = total_steps, items_per_step, unit
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.stream = stream or sys.stderr
    self._tty = getattr(self.stream, "isatty", lambda: False)()
    self._start_time = self._last_time = time.time()
    self._start_step = self._last_step = start_step

  def restart_clock(self, step: int) -> None:
    """Excludes compilation (or an eval) from the throughput and ETA."""
    self._last_time, self._last_step = time.time(), step

  def seconds_since_restart(self) -> float:
    return time.time() - self._last_time

  def report(self, step: int, metrics: Mapping[str, float],
             shares: Mapping[str, float] | None = None) -> float:
    """Prints one report (`shares`, fractions, as percentages); returns the items/s since
    the previous report."""
    now = time.time()
    steps = step - self._last_step
    rate = steps * self.items_per_step / max(now - self._last_time, 1e-9)
    step_time = (now - self._last_time) / max(steps, 1)
    self._last_time, self._last_step = now, step
    if self.enabled:
      speed = f"{rate:.1f} {self.unit}/s" if steps else f"- {self.unit}/s"
      shown = " | ".join([f"{k} {float(v):.4g}" if abs(float(v)) < 1e4 else f"{k} {float(v):,.0f}"
                          for k, v in metrics.items()] +
                         [f"{k} {float(v):.0%}" for k, v in (shares or {}).items()])
      line = (f"step {step}/{self.total_steps} | {shown} | {speed} | "
              f"elapsed {_clock(now - self._start_time)} | "
              f"ETA {_clock(step_time * (self.total_steps - step))}")
      self.stream.write(("\r" + line + "\033[K") if self._tty else line + "\n")
      self.stream.flush()
    return rate

  def message(self, text: str) -> None:
    if self.enabled:
      self.stream.write(("\n" if self._tty else "") + text + "\n")
      self.stream.flush()
