"""Pretraining loop: config -> train state -> jitted steps -> checkpoints, evals, logs.

    python -m ssl_jax.train --config experiments/simclr.py:fashion_mnist --workdir /tmp/run

A run resumes by itself from the newest good checkpoint in its workdir (train state and
data-iterator state together, so the continuation is bitwise the uninterrupted run on
CPU); a damaged step is moved aside and the one before it is used. SIGTERM or Ctrl-C
saves a checkpoint and returns before the last step. A non-finite loss, gradient or
state stops the run with TrainingDiverged, and no checkpoint of it is written.
"""
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import evals, methods, models
from ssl_jax.core import log, parallel, rundir, sharding
from ssl_jax.core.errors import ConfigError, TrainingDiverged
from ssl_jax.core.validate import number
from ssl_jax.data import feed, modality, own, pipeline, sequences, sources, text
from ssl_jax.evals.lib import monitor as monitor_lib
from ssl_jax.training import checkpoint, cpu_devices, engine, optim, resume
from ssl_jax.training.engine import TrainState


@jax.jit
def _first_nonfinite(first: jax.Array, finite: jax.Array, step: jax.Array) -> jax.Array:
  """The step number of the first non-finite step so far, or -1."""
  return jnp.where((first < 0) & ~finite, step, first)


def default_config() -> ml_collections.ConfigDict:
  """The trainer's own fields; a config adds data, model, views, method, optimizer, eval."""
  config = ml_collections.ConfigDict()
  config.seed = 0                        # seeds init, data order and augmentation
  config.method = "simclr"               # module name in ssl_jax/methods/
  config.global_batch_size = 256         # examples per step, summed over all devices/hosts
  config.total_steps = 1000              # optimizer steps in the whole run
  config.log_every_steps = 50            # metrics fetch + progress line (one host sync)
  config.checkpoint_every_steps = 1000   # also saved at the end and on SIGTERM
  config.keep_checkpoints = 2            # how many recent checkpoints orbax keeps
  config.resume_changes = ""             # comma-separated fields a resumed run may change (e.g. total_steps)
  config.async_checkpointing = True      # write checkpoints in a background thread
  config.precision = "float32"           # float32 | bfloat16: the networks' matmuls and convolutions
  config.grad_accumulation = 1          # micro-batches per step (methods with PER_EXAMPLE_LOSS)
  config.loader_workers = -1             # host loader processes; -1: by core count (feed.default_worker_count)
  config.sharding = sharding.default_config()  # fsdp: split params/optimizer state (ssl_jax/core/sharding.py)
  return config


def check_trainer_fields(config: ml_collections.ConfigDict) -> None:
  """Raises errors.ConfigError naming the first trainer field out of range."""
  number("total_steps", config.total_steps, low=1, integer=True)
  number("global_batch_size", config.global_batch_size, low=1, integer=True)
  for name in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    number(name, config[name], low=1, integer=True)
  number("seed", config.seed, low=0, high=2**32 - 1, integer=True)
  number("loader_workers", config.loader_workers, low=-1, integer=True)
  number("grad_accumulation", config.grad_accumulation, low=1, integer=True)
  engine.check_precision(config)


def check(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """The one check pass: every section of a run's config, each by the check that lives
  beside it, before anything (mesh, method, optimizer, data) is built. Raises
  errors.ConfigError (one line with the fix) for the first bad value. `device_count`
  (default: this host's jax.device_count()) is the mesh's, e.g. a TPU slice's chips."""
  check_trainer_fields(config)
  parallel.fsdp_size(config.sharding.fsdp, device_count or jax.device_count())
  sharding.check_rules(config.sharding)
  modality.check_config(config.data)
  for section in ("model", "text_model"):
    if section in config:
      models.check_config(config[section])
  optim.check_config(config.optimizer)
  method = methods.get(config.method)
  if hasattr(method, "check_config"):
    method.check_config(config)
  for section in ("model", "text_model"):
    if section in config and config[section].get("drop_path_rate") and \
        not getattr(method, "DROP_PATH", False):
      raise ConfigError(f"{section}.drop_path_rate={config[section].drop_path_rate}: "
                        f"{config.method} does not apply stochastic depth (its backbone gets "
                        "no random stream for it); set it to 0")
  evals.check_config(config.eval)
  if config.eval.monitor_every_steps:
    monitor_lib.check_config(config.eval)
  check_labels(config)


def check_labels(config: ml_collections.ConfigDict) -> None:
  """ConfigError before training when the evaluators need labels the dataset lacks."""
  if config.data.get("label_key", "x"):
    return
  scored = [m.strip() for m in str(config.eval.modes).split(",")
            if m.strip() not in ("", "none", "objective")]
  if scored or config.eval.monitor_every_steps:
    raise ConfigError(
        f"dataset {config.data.name!r} has no labels (data.label_key is empty), but "
        + (f"eval.modes={config.eval.modes!r} scores" if scored else "the in-loop monitor scores")
        + " against labels: pass --config.eval.modes=objective (or none) and "
        "--config.eval.monitor_every_steps=0, or prepare the dataset with one folder per class")


class CollapseWatch:
  """Warns once when the loss sits at the method's collapsed value for several logs.

  A method reports that value as the metric `collapsed_loss` (ln(2N-1) for NT-Xent, ln K
  for DINO); methods whose collapse has no such value (BYOL) do not report it.
  """

  LOGS = 3              # consecutive logs at the value before the warning
  TOLERANCE = 0.01      # relative distance that counts as "at" it

  def __init__(self, warn):
    self._warn, self._count, self._warned = warn, 0, False

  def observe(self, step: int, metrics: dict) -> None:
    collapsed = metrics.get("collapsed_loss")
    if collapsed is None or self._warned:
      return
    at_value = abs(float(metrics["loss"]) - float(collapsed)) <= self.TOLERANCE * abs(float(collapsed))
    self._count = self._count + 1 if at_value else 0
    if self._count >= self.LOGS:
      self._warned = True
      self._warn(f"warning: at step {step} the loss has sat at its collapsed value "
                 f"{float(collapsed):.4g} for {self.LOGS} logs: the representation may have "
                 "collapsed (see embedding_std and effective_rank in metrics.jsonl)")


class _Preemption:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop checks, so the run saves and
  stops cleanly. A second Ctrl-C interrupts at once."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None  # name of the signal received
    self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name

  def restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def train(config: ml_collections.ConfigDict, workdir: str,
          stop_at_step: int | None = None) -> TrainState:
  """Runs (or resumes) pretraining in `workdir`; returns the final train state.

  The run is complete when the returned state's step equals config.total_steps; it
  returns earlier after SIGTERM/SIGINT (with a checkpoint) or at `stop_at_step`, which
  ends this process early without changing the run: the schedule still spans
  config.total_steps, and a later call continues it.

  Raises:
    TrainingDiverged: a non-finite loss, gradient or state (nothing of it is saved).
    errors.ConfigMismatchError: the workdir's run was started with another config.
    errors.CheckpointError: no checkpoint restores, or a background save failed.
    errors.WorkdirError: another run holds the workdir (rundir.WorkdirLock), or it cannot
      be written.
  """
  # A dataset prepared from your own files brings its measured size, statistics and labels.
  own.apply_metadata(config.data, sources.resolve_data_dir(config.data.data_dir),
                     warn=lambda text: print(text, file=sys.stderr, flush=True))
  check(config)  # the whole config, once, before anything is built
  lock = rundir.WorkdirLock(workdir)  # before anything is written; one run per workdir
  try:
    return _train(config, workdir, stop_at_step, lock)
  finally:
    lock.release()


def _train(config, workdir, stop_at_step, lock) -> TrainState:
  mesh = parallel.make_mesh(config.sharding.fsdp)
  method, init, step_fn = engine.build(config, mesh)
  data_iterator = train_stream(config, mesh)
  # Per second: images, videos, text sequences (one text each, or several packed), or examples.
  unit = {"image": "img", "video": "video", "text": "seq"}.get(config.data.modality, "examples")
  progress = log.Progress(config.total_steps, config.global_batch_size, unit=unit)
  checkpoints = checkpoint.Checkpointer(workdir, config.keep_checkpoints,
                                        config.async_checkpointing, warn=progress.message)
  rng = jax.random.PRNGKey(config.seed)
  if mesh.shape[parallel.FSDP_AXIS] > 1:
    progress.message(f"mesh {dict(mesh.shape)}: "
                     + sharding.describe(engine.abstract_state(init, rng)))
  if checkpoints.latest_step() is not None:
    resume.check_config(config, workdir, progress.message)
    state = checkpoints.restore_latest_good(engine.abstract_state(init, rng), data_iterator)
    progress.message(f"resumed from {checkpoints.directory} at step {int(state.step)}")
    rundir.truncate_metrics(workdir, int(state.step))  # steps after it will be logged again
  else:
    state = init(rng)
    rundir.truncate_metrics(workdir, 0)  # a start that stopped before its first checkpoint
  rundir.save_config(config, workdir)
  writer = log.MetricWriter(workdir)
  monitor_every = config.eval.monitor_every_steps
  monitor = monitor_lib.Monitor(config, mesh, method) if monitor_every else None
  preemption = _Preemption()
  stop = False
  step = first_step = int(state.step)
  in_flight = None  # the previous step's loss: at most two steps are queued on the devices
  first_nonfinite = jnp.asarray(-1, jnp.int32)
  collapse = CollapseWatch(progress.message)
  progress.restart_clock(step)
  window_start = time.perf_counter()  # since the last report: input wait as a share of it
  # Text: the real (non-[PAD]) tokens the steps read, summed on device, reported per second.
  tokens = RealTokens() if config.data.modality == "text" else None

  def restart_window() -> float:
    """Starts the next report's window (throughput, ETA, input wait, real tokens) now, so
    that compilation or an evaluation in between counts in none of them."""
    progress.restart_clock(step)
    data_iterator.take_wait_seconds()
    now = time.perf_counter()
    if tokens is not None:
      tokens.rate(now)
    return now

  def check_finite(now: int, first_bad: int | None = None) -> None:
    first_bad = int(first_nonfinite) if first_bad is None else first_bad
    if first_bad >= 0:
      good = checkpoints.all_steps()
      raise TrainingDiverged(
          f"non-finite loss, gradient or state at step {first_bad} (detected at step {now}, "
          f"checked every {config.log_every_steps} steps and before each save); nothing after "
          f"step {first_bad - 1} was saved. Last good checkpoint: "
          + (f"step {good[-1]} in {checkpoints.directory}" if good else "none") +
          f". Lower optimizer.learning_rate (now {config.optimizer.learning_rate}) or set "
          "optimizer.grad_clip_norm; rerunning the same command resumes from that checkpoint.")

  try:
    last_step = min(config.total_steps, stop_at_step or config.total_steps)
    while step < last_step:
      checkpoints.poll()  # a failed background save surfaces here, at a step boundary
      batch = next(data_iterator)
      state, metrics = step_fn(state, batch)
      if tokens is not None:
        tokens.add(batch)
      if in_flight is not None:
        # Waiting here, with this step queued behind the previous one, bounds how far the
        # host runs ahead; the time `next` then blocks is time the devices sat idle.
        jax.block_until_ready(in_flight)
      in_flight = metrics["loss"]
      step += 1
      first_nonfinite = _first_nonfinite(first_nonfinite, metrics["finite"], state.step)
      if step == first_step + 1:  # keep compilation out of the throughput and ETA
        jax.block_until_ready(metrics)
        progress.message(f"first step (compilation included) took {progress.seconds_since_restart():.1f}s")
        window_start = restart_window()
      if step % config.log_every_steps == 0 or step == config.total_steps:
        metrics, first_bad = jax.device_get((metrics, first_nonfinite))
        now = time.perf_counter()
        input_wait = data_iterator.take_wait_seconds() / max(now - window_start, 1e-9)
        window_start = now
        shown = {"loss": metrics["loss"]}
        if tokens is not None:
          metrics["real_tokens_per_second"] = shown["real tok/s"] = tokens.rate(now)
        rate = progress.report(step, shown, {"input wait": input_wait})
        writer.write(step, {**metrics, "examples_per_second": rate,
                            "input_wait_fraction": input_wait})
        lock.refresh()
        check_finite(step, int(first_bad))
        collapse.observe(step, metrics)
        # Hosts must agree before a collective save; they compare flags here only.
        stop = parallel.any_process(bool(preemption.requested))
      if jax.process_count() == 1:
        stop = bool(preemption.requested)
      if monitor and (step % monitor_every == 0 or step == config.total_steps):
        check_finite(step)
        results = monitor(state.params, state.method_state)
        writer.write(step, results)
        progress.message(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        window_start = restart_window()
      if step % config.checkpoint_every_steps == 0 or step == last_step or stop:
        check_finite(step)  # never write a diverged state
        checkpoints.save(step, state, data_iterator, force=True)
      if stop:
        checkpoints.wait()  # the step must have landed before the run says it is safe
        signal_name = preemption.requested or "SIGTERM/SIGINT on another host"
        progress.message(f"{signal_name}: saved step {step} to {checkpoints.directory}; "
                         "stopping (rerun the same command to resume)")
        break
  finally:
    preemption.restore()
    try:
      checkpoints.close()
    finally:
      writer.close()
      data_iterator.close()
  return state


class RealTokens:
  """Counts the non-[PAD] tokens of every batch on device (no host sync per step) and
  gives their rate per second at each report: packing's gain is in these, not in
  sequences per second."""

  def __init__(self):
    self._count = jnp.zeros((), jnp.float32)
    self._add = jax.jit(lambda total, ids: total + jnp.sum(ids != text.PAD).astype(jnp.float32))
    self._since = time.perf_counter()

  def add(self, batch) -> None:
    self._count = self._add(self._count, batch["tokens"])

  def rate(self, now: float) -> float:
    """Tokens per second since the previous call (or the start); starts a new window."""
    rate = float(self._count) / max(now - self._since, 1e-9)
    self._count, self._since = jnp.zeros((), jnp.float32), now  # exact: a window's count
    return rate


def train_stream(config: ml_collections.ConfigDict, mesh) -> feed.DevicePrefetch:
  """The run's training batches as global arrays: config.data read by config.loader_workers
  processes (-1: feed.default_worker_count), each batch on the devices before the step that
  needs it starts; the checkpointed position is that of the batches the steps consumed."""
  data = config.data
  source, keys, host_preprocess = sequences.training_source(data, data.train_split, config.seed)
  workers = config.loader_workers if config.loader_workers >= 0 else feed.default_worker_count()
  host_batches = iter(pipeline.train_loader(
      source, global_batch_size=config.global_batch_size, seed=config.seed,
      keys=keys, preprocess=host_preprocess, worker_count=workers))
  return feed.DevicePrefetch(host_batches, lambda b: parallel.to_global(b, mesh))


def is_complete(state: TrainState, config: ml_collections.ConfigDict) -> bool:
  """Whether `state` is the end of the run (not a preempted or stopped-early one)."""
  return int(state.step) >= config.total_steps


def main(argv):
  from absl import flags
  del argv
  log.quiet_libraries()
  with log.fail_cleanly():
    cpu_devices.apply(flags.FLAGS.config)  # before jax starts its backends
    parallel.initialize_distributed()
    train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Experiment file with get_config(), e.g. "
                                  "experiments/simclr.py:cifar10; override fields as --config.x=y.")
  flags.DEFINE_string("workdir", None, "Where checkpoints, config.json and metrics go.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
