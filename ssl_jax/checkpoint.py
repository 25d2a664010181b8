"""Orbax checkpoints holding the train state AND the grain iterator state.

Saving both at the same step is what makes resume exact: the restored run sees the
same parameters, optimizer state and the same next batch as the uninterrupted one.
Orbax writes each checkpoint to a temporary directory and renames it when complete,
so a run killed mid-save leaves no half-written checkpoint behind.
"""
import os
from typing import Any

import grain
import orbax.checkpoint as ocp

STATE, DATA = "state", "data"


class Checkpointer:
  """Save/restore (train state, data iterator) under workdir/checkpoints/<step>."""

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"keep_checkpoints={keep}; must be >= 1")
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any = None, force: bool = False) -> bool:
    """Starts an (async) save; the device->host copy finishes before this returns,
    so the caller may donate `state` to the next step right away."""
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, data_iterator: Any = None,
              step: int | None = None) -> Any:
    """Restores into `abstract_state`'s structure and shardings (so a checkpoint
    written on N devices loads onto M), and the iterator in place if given."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

