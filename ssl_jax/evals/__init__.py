"""Evaluators, one module per protocol, shared by the in-loop monitor and
`python -m ssl_jax.evaluate`.

The module path is the registry: `--mode knn` and `config.eval.monitor = "knn"` mean
`ssl_jax.evals.knn`. Modules whose names start with "_" are helpers, not evaluators.
Every evaluator exposes:

  default_config(**overrides) -> ConfigDict
      Its settings, the section config.eval.<name>; strict.
  protocol(config) -> dict
      The settings that define the number (k and T, the probe grid, ...); written into
      every eval/<mode>.json beside the splits, the checkpoint step and the features.

and, by its kind (module attribute INPUT, "features" when absent), one of:

  evaluate(train, test, *, num_classes, config) -> dict                  (features)
      `train` and `test` are (features [N, D] float32, labels [N] int32) on the host;
      `config` is the evaluator's own section. Returns at least {"top1": float}. Run for
      the pretrained features and both baselines (random init, raw input); the in-loop
      monitor runs these.
  evaluate_weights(backbones, *, run_config, mesh, num_classes, config, log) -> dict
                                                                          (weights)
      `backbones` is {"pretrained", "random_init": flax variables of
      models.build(run_config.model)} (the method's `backbone`); the evaluator trains
      its own network on run_config.data (fine-tuning) and returns {name: {"top1", ...}}.
  evaluate_state(states, *, method, run_config, mesh, config, log) -> dict    (state)
      `states` is {"pretrained", "random_init": (params, method_state)}; the evaluator
      uses the method's own functions on held-out data (objective.py: its loss and
      metrics, e.g. MLM accuracy and perplexity; zeroshot.py: CLIP's text encoder) and
      returns {name: {SCORE, ...}}; module attributes SCORE (the headline field),
      FEATURES and BASELINES (what was measured, for the report's protocol).
"""
import importlib
import pkgutil
from types import ModuleType

from ssl_jax.validate import ConfigError


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def input_kind(name: str) -> str:
  """"features" (scored on frozen features), "weights" (trains from the backbone) or
  "state" (uses the whole trained state and the method's own functions)."""
  return getattr(get(name), "INPUT", "features")


def feature_evaluators() -> list[str]:
  return [name for name in available() if input_kind(name) == "features"]


def get(name: str) -> ModuleType:
  if name not in available():
    raise ConfigError(f"evaluator {name!r} does not exist; available: {available()}")
  return importlib.import_module(f"{__name__}.{name}")
