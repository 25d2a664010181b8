"""Orbax checkpoints holding the train state, the grain iterator state and an integrity record.

Saving the state and the data position at the same step is what makes resume exact: the
restored run sees the same parameters, optimizer state and the same next batch as the
uninterrupted one. Orbax writes each step to a temporary directory and renames it when
every item is complete, so a run killed mid-save leaves no half-written step behind.

Orbax does not verify what it reads back: damaged bytes inside an array file restore
silently. So every step also holds an `integrity` item, written in the same atomic
commit: the path, shape, dtype and CRC32 of every state leaf, and the CRC32 of each
process's iterator state. A restore is accepted only when the restored values hash to
that record. A step that fails to restore or to verify is moved aside to
`checkpoints/corrupt-<step>/` (never deleted) and the next older step is tried.
"""
import json
import re
import zlib
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from ssl_jax.core import paths
from ssl_jax.core.errors import (CheckpointError, ConfigError, NoGoodCheckpointError,
                                 StateMismatchError)

STATE, DATA, INTEGRITY = "state", "data", "integrity"
FORMAT = 1  # version of the integrity record





class _Corrupt(Exception):
  """A step is damaged (unreadable, or its values do not match its integrity record)."""


def _host_copy(leaf: Any) -> Any:
  """The whole value of a leaf on this host. A leaf split across processes (FSDP over
  several hosts) is gathered: a collective, which every process reaches in the same
  order because they all record the same tree."""
  if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.is_fully_replicated):
    return multihost_utils.process_allgather(leaf, tiled=True)
  return jax.device_get(leaf)


def _split_across_processes(abstract_state: Any) -> bool:
  """Whether any leaf's sharding spreads distinct parts of it over several processes."""
  if jax.process_count() == 1:
    return False
  return any(getattr(leaf, "sharding", None) is not None and not leaf.sharding.is_fully_replicated
             for leaf in jax.tree.leaves(abstract_state))


def _leaf_records(state: Any) -> dict:
  """{path: {"shape", "dtype", "crc32"}} of every leaf, from host copies of the whole
  values, so the record is the same whatever layout wrote or restores the state."""
  records = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    # One leaf at a time, so a host never holds more than one gathered leaf.
    array = np.asarray(_host_copy(leaf))  # tobytes() is C order whatever the layout
    records[jax.tree_util.keystr(path)] = {
        "shape": list(array.shape), "dtype": str(array.dtype),
        "crc32": zlib.crc32(array.tobytes())}
  return records


def _abstract_records(abstract_state: Any) -> dict:
  return {jax.tree_util.keystr(path): {"shape": list(leaf.shape), "dtype": str(leaf.dtype)}
          for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)}


def _iterator_crc(data_iterator: Any) -> int:
  return zlib.crc32(json.dumps(data_iterator.get_state(), sort_keys=True).encode())


def _all_processes(value: int) -> list[int]:
  """`value` from every process, in process order (a collective on several hosts)."""
  if jax.process_count() == 1:
    return [int(value)]
  gathered = multihost_utils.process_allgather(np.asarray([value], np.int64))
  return [int(v) for v in np.asarray(gathered).reshape(-1)]


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _field_of(name: str) -> str:
  """".params['encoder']..." (a TrainState leaf's path) -> "params"."""
  return re.match(r"\.(\w+)", name).group(1) if name.startswith(".") else name


def _as_field_path(name: str) -> str:
  """"['params']['encoder']..." (the same leaf in a dict of fields) -> ".params['encoder']..."."""
  return re.sub(r"^\['(\w+)'\]", r".\1", name)


def _verify(saved: dict, restored: dict) -> None:
  """Raises _Corrupt unless every recorded leaf was restored with its recorded CRC32."""
  bad = [name for name, leaf in saved.items()
         if restored.get(name, {}).get("crc32") != leaf["crc32"]]
  if bad:
    raise _Corrupt(f"{len(bad)} of {len(restored)} arrays do not match their checksums "
                   f"(first: {bad[0]})")


def _shape_differences(saved: dict, wanted: dict) -> list[str]:
  lines = []
  for path in sorted(set(saved) | set(wanted)):
    if path not in wanted:
      lines.append(f"  {path}: in the checkpoint, not in the state this config builds")
    elif path not in saved:
      lines.append(f"  {path}: built by this config, not in the checkpoint")
    else:
      have = (tuple(saved[path]["shape"]), saved[path]["dtype"])
      want = (tuple(wanted[path]["shape"]), wanted[path]["dtype"])
      if have != want:
        lines.append(f"  {path}: {have[0]} {have[1]} in the checkpoint, {want[0]} {want[1]} now")
  return lines


class Checkpointer:
  """Save/restore (train state, data iterator) under workdir/checkpoints/<step>."""

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = True,
               warn: Callable[[str], None] | None = None):
    if keep < 1:
      raise ConfigError(f"keep_checkpoints={keep}; must be >= 1")
    self.directory = paths.join(paths.absolute(workdir), "checkpoints")
    self._keep, self._async = keep, async_save
    self._warn = warn or (lambda text: None)
    self._pending_step = None  # last step handed to a background save, not yet confirmed
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=self._keep, create=True, enable_async_checkpointing=self._async),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler(),
                       INTEGRITY: ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_path(self, step: int) -> str:
    return paths.join(self.directory, str(step))

  # ----------------------------------------------------------------------- save

  def save(self, step: int, state: Any, data_iterator: Any = None, force: bool = False) -> bool:
    """Starts an (async) save; the device->host copy finishes before this returns,
    so the caller may donate `state` to the next step right away."""
    self.poll()
    record = {"format": FORMAT, "step": int(step), "leaves": _leaf_records(state)}
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      record["data_crc32"] = _all_processes(_iterator_crc(data_iterator))
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    items[INTEGRITY] = ocp.args.JsonSave(record)
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      self._pending_step = int(step)
    return saved

  def poll(self) -> None:
    """Raises CheckpointError if a background save has failed since the last call.

    Orbax logs a failed background commit and drops the step, but raises nothing on
    the main thread until much later, if at all (orbax issue #605); this checks, once
    the save is over, that the step it was given did land.
    """
    if self._pending_step is None or self._manager.is_saving_in_progress():
      return
    step, self._pending_step = self._pending_step, None
    cause = None
    try:
      self._manager.wait_until_finished()  # returns at once; re-raises the thread's error
      self._manager.check_for_errors()
    except Exception as error:  # pylint: disable=broad-except
      cause = error
    if cause is None and self._landed(step):
      return
    good = [s for s in self.all_steps() if s != step and self._landed(s)]
    raise CheckpointError(
        f"saving step {step} to {self.step_path(step)} failed in the background"
        + (f": {type(cause).__name__}: {cause}" if cause else " (the step never landed)")
        + ". The newest good checkpoint is " + (f"step {good[-1]}" if good else "none")
        + "; check the disk (space, permissions) and rerun to resume.") from cause

  def _landed(self, step: int) -> bool:
    """Whether the step is final (orbax lists it: renamed from its temporary name locally,
    its commit marker written on GCS) and holds its integrity record."""
    self._manager.reload()
    return (step in self._manager.all_steps() and
            paths.isfile(paths.join(self.step_path(step), INTEGRITY, "metadata")))

  # -------------------------------------------------------------------- restore

  def restore(self, abstract_state: Any, data_iterator: Any = None,
              step: int | None = None) -> Any:
    """Restores one step into `abstract_state`'s structure and shardings (so a checkpoint
    written on N devices loads onto M) and verifies it against its integrity record;
    sets the iterator in place if given. Raises CheckpointError if the step is damaged."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    try:
      return self._restore_verified(step, abstract_state, data_iterator)
    except _Corrupt as error:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged: {error}") from None

  def restore_fields(self, abstract_fields: dict, step: int | None = None) -> dict:
    """Restores only some fields of the saved train state, e.g. {"step", "params",
    "method_state"} -> their values: evaluation and fine-tuning need no optimizer state,
    so they never build or read one. Verified against the step's integrity record like
    `restore`; raises CheckpointError if the step is damaged."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}: the run has not saved one "
                            "yet (train it, or wait for its first checkpoint)")
    if step not in self.all_steps():
      raise CheckpointError(f"there is no checkpoint step {step} in {self.directory}; its "
                            f"steps are {self.all_steps()}")
    try:
      record = self._read_record(step)
      saved = {name: leaf for name, leaf in record["leaves"].items()
               if _field_of(name) in abstract_fields}
      wanted = {_as_field_path(name): leaf
                for name, leaf in _abstract_records(abstract_fields).items()}
      differences = _shape_differences(saved, wanted)
      if differences:
        raise StateMismatchError(
            f"checkpoint step {step} in {self.directory} holds differently shaped "
            f"{', '.join(abstract_fields)} than this config builds:\n" +
            "\n".join(differences[:20]))
      path = epath.Path(self.step_path(step)) / STATE
      try:
        fields = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
            item=abstract_fields,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_fields),
            partial_restore=True))
      except Exception as error:  # pylint: disable=broad-except
        raise _Corrupt(f"{type(error).__name__}: {str(error)[:300]}") from None
      _verify(saved, {_as_field_path(name): leaf
                      for name, leaf in _leaf_records(fields).items()})
      return dict(fields)
    except _Corrupt as error:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged: {error}") from None

  def restore_latest_good(self, abstract_state: Any, data_iterator: Any = None) -> Any:
    """Restores the newest step that restores and verifies, moving damaged steps aside.

    Every process tries the same step and they agree on the outcome, so all hosts fall
    back to the same step. Raises NoGoodCheckpointError when none is left.
    """
    tried = []
    while True:
      step = self.latest_step()
      if step is None:
        break
      try:
        state, problem = self._restore_verified(step, abstract_state, data_iterator), None
      except _Corrupt as error:
        state, problem = None, str(error)
      except StateMismatchError:
        raise
      failed = _all_processes(problem is not None)
      if not any(failed):
        if tried:
          self._warn(f"resuming from step {step}, the newest checkpoint that verified")
        return state
      if problem is None:
        problem = f"process {failed.index(1)} could not restore or verify its part"
      moved = self._move_aside(step)
      self._warn(f"WARNING: checkpoint step {step} is damaged ({problem}); moved it to "
                 f"{moved} and falling back to the previous step")
      tried.append(f"step {step}: {problem} (now in {moved})")
    raise NoGoodCheckpointError(
        f"no checkpoint in {self.directory} could be restored. Tried, newest first:\n  "
        + "\n  ".join(tried) + "\nThe damaged steps were kept for inspection. To start this "
        "run from scratch, use a new --workdir (or remove the checkpoints directory).")

  def _restore_verified(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
    """Restores and verifies one step on this process; raises _Corrupt if it is damaged.

    Only the state goes through orbax, which every process reads alike (the same files);
    the integrity record and this process's iterator state are plain JSON files read
    here. So a fault that only one process sees (its iterator file) cannot make the
    processes run different collectives inside orbax: they all reach the agreement in
    restore_latest_good. The manager is reset by the caller, on every process at once.
    """
    record = self._read_record(step)
    differences = _shape_differences(record["leaves"], _abstract_records(abstract_state))
    if differences:
      raise StateMismatchError(
          f"checkpoint step {step} in {self.directory} holds a differently shaped state than "
          "this config builds:\n" + "\n".join(differences[:20]) +
          "\nResume with the config the run was started with (its config.json), or use a new "
          "--workdir for the new config.")
    problem = None
    try:
      state = self._manager.restore(
          step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]
    except Exception as error:  # pylint: disable=broad-except
      problem = f"{type(error).__name__}: {str(error)[:300]}"
    if _split_across_processes(abstract_state):
      # Verifying gathers the split leaves: a collective, so first agree that every
      # process has its part, or a process that failed would leave the others waiting.
      failed = _all_processes(problem is not None)
      if any(failed) and problem is None:
        problem = f"process {failed.index(1)} could not restore its part"
    if problem:
      raise _Corrupt(problem)
    _verify(record["leaves"], _leaf_records(state))
    if data_iterator is not None:
      self._restore_iterator(step, record, data_iterator)
    return state

  def _read_record(self, step: int) -> dict:
    """The step's integrity record, read as a plain file; raises _Corrupt if unusable."""
    try:
      record = json.loads((epath.Path(self.step_path(step)) / INTEGRITY / "metadata").read_text())
    except Exception as error:  # pylint: disable=broad-except
      raise _Corrupt(f"its integrity record is unreadable ({type(error).__name__}: "
                     f"{str(error)[:200]})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "leaves" not in record:
      raise _Corrupt("its integrity record is not one this version writes")
    return record

  def _restore_iterator(self, step: int, record: dict, data_iterator: Any) -> None:
    """Sets `data_iterator` to this process's saved position (as grain's handler would)."""
    saved_crc = record.get("data_crc32")
    if saved_crc is None:
      raise _Corrupt("it holds no data-iterator state")
    index, count = jax.process_index(), jax.process_count()
    if len(saved_crc) != count:
      raise StateMismatchError(
          f"checkpoint step {step} was written by {len(saved_crc)} processes and this job has "
          f"{count}: each process resumes its own data shard, so resume with {len(saved_crc)}")
    path = epath.Path(self.step_path(step)) / DATA / f"process_{index}-of-{count}.json"
    try:
      text = path.read_text()
      if zlib.crc32(json.dumps(json.loads(text), sort_keys=True).encode()) != saved_crc[index]:
        raise _Corrupt(f"the data-iterator state of process {index} does not match its checksum")
      data_iterator.set_state(json.loads(text))
      getattr(data_iterator, "start_prefetch", lambda: None)()
    except _Corrupt:
      raise
    except Exception as error:  # pylint: disable=broad-except
      raise _Corrupt(f"the data-iterator state of process {index} is unreadable "
                     f"({type(error).__name__}: {str(error)[:200]})") from None

  def _reset_manager(self) -> None:
    try:
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      pass
    self._manager = self._new_manager()

  def _move_aside(self, step: int) -> str:
    """Moves a damaged step to checkpoints/corrupt-<step>[-N]/ (process 0 only)."""
    _barrier(f"ssl_jax_before_move_{step}")  # nobody still reads the step
    target = paths.join(self.directory, f"corrupt-{step}")
    suffix = 1
    while paths.exists(target):  # a step can be damaged, rewritten and damaged again
      target, suffix = paths.join(self.directory, f"corrupt-{step}-{suffix}"), suffix + 1
    if jax.process_index() == 0:
      paths.move(self.step_path(step), target)
    _barrier(f"ssl_jax_after_move_{step}")
    self._reset_manager()  # on every process together; a failed read can leave orbax's
    return target          # event loop closed, and the step list must be read again

  def wait(self) -> None:
    """Waits for the last save; raises CheckpointError if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except
      pass  # poll() reports it, with the step and path
    self.poll()

  def close(self) -> None:
    """Waits for the last save; raises CheckpointError if it failed."""
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        pass
