"""Resuming a workdir with the config it was started with.

A checkpoint is only the continuation of a run under that run's config: a different model
cannot load it, and a different optimizer, schedule length, batch, seed or dataset would
silently make a new run out of the old one's state. So before restoring, the workdir's
config.json is compared with the new config, field by field. Fields that only change how
the run is watched or saved (SAFE_TO_CHANGE) may differ; any other difference is an error
that names each field with both values, unless the user lists it in
`config.resume_changes` to say they mean it (e.g. `total_steps` to extend a run; the
checkpoint's shapes are still verified against the new config on restore).
"""
import json
from typing import Any, Callable

import ml_collections

from ssl_jax.core import rundir
from ssl_jax.core.errors import ConfigMismatchError

# Dotted names (or section prefixes) that do not change the run's state or its meaning.
SAFE_TO_CHANGE = (
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "async_checkpointing",
    "resume_changes", "eval", "data.data_dir", "loader_workers",
    "sharding",  # where the state's leaves live, not their values (restored across layouts)
)
_ABSENT = "<absent>"
# Fields added after runs were saved without them, at the value those runs implicitly had:
# absent in the saved config and at this value now is no change.
LATER_FIELDS = {"grad_accumulation": 1, "precision": "float32", "model.dtype": "float32",
                "model.remat": "none", "model.zero_init_residual": False, "sharding.fsdp": 1,
                "sharding.rules": [],
                "sharding.min_size": 2**14, "sharding.cpu_devices": 0, "byol.final_momentum": 1.0,
                "moco.final_momentum": 1.0, "dino.final_momentum": 1.0,
                "simdino.final_momentum": 1.0, "simdino.coding_rate_input": "student",
                "model.type_vocab_size": 0, "data.layout": "single",
                "mlm.pair_loss_weight": 1.0, "mlm.max_predictions": 0,
                "byol.per_view_forward": False, "moco.per_view_forward": False,
                "simsiam.per_view_forward": False, "barlow_twins.per_view_forward": False,
                "vicreg.per_view_forward": False}



def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": value} for a nested dict (lists and tuples are leaves)."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return out


def _as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def _matches(name: str, patterns) -> bool:
  return any(name == p or name.startswith(p + ".") for p in patterns)


def differences(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{field: (saved value, new value)} for every leaf field that differs."""
  saved, new = flatten(saved), flatten(new)
  return {name: (saved.get(name, _ABSENT), new.get(name, _ABSENT))
          for name in sorted(set(saved) | set(new))
          if saved.get(name, _ABSENT) != new.get(name, _ABSENT)}


def check_config(config: ml_collections.ConfigDict, workdir: str,
                 note: Callable[[str], None] = print) -> None:
  """Raises ConfigMismatchError if `config` may not resume the run in `workdir`."""
  path = rundir.config_path(workdir)
  try:
    saved = rundir.read_config(workdir)
  except (OSError, ValueError) as error:
    raise ConfigMismatchError(
        f"{path} is unreadable ({error}), so this run cannot be checked against the config "
        "it was started with; restore the file, or use a new --workdir.") from None
  if saved is None:
    note(f"warning: {path} is missing, so the resumed config cannot be checked against it")
    return
  allowed = [name.strip() for name in str(config.get("resume_changes", "")).split(",")
             if name.strip()]
  changed = {k: v for k, v in differences(saved, _as_json(config)).items()
             if not (v[0] == _ABSENT and k in LATER_FIELDS and v[1] == LATER_FIELDS[k])}
  safe = {k: v for k, v in changed.items() if _matches(k, SAFE_TO_CHANGE)}
  accepted = {k: v for k, v in changed.items() if k not in safe and _matches(k, allowed)}
  refused = {k: v for k, v in changed.items() if k not in safe and k not in accepted}
  for name, (old, new) in {**safe, **accepted}.items():
    note(f"resuming with {name} changed: {old!r} -> {new!r}")
  if refused:
    lines = "\n".join(f"  {name}: {old!r} in the run, {new!r} now"
                      for name, (old, new) in refused.items())
    raise ConfigMismatchError(
        f"{workdir} holds a run started with another config; these fields differ:\n{lines}\n"
        "A different config is a different run: give it a new --workdir. To continue this "
        "run with the change deliberately, name the fields in "
        f"--config.resume_changes={','.join(refused)} (fields such as log_every_steps or "
        "checkpoint_every_steps may change freely).")
