"""Evaluators, one module per protocol, shared by the in-loop monitor and
`python -m ssl_jax.evaluate`.

The module path is the registry: `--mode knn` and `config.eval.monitor = "knn"` mean
`ssl_jax.evals.knn` (core/registry.py). Shared helpers live in evals/lib/: feature
extraction (extraction.py) and the in-loop monitor (monitor.py).
Every evaluator exposes:

  default_config(**overrides) -> ConfigDict
      Its settings, the section config.eval.<name>; strict.
  check_config(config) -> None
      Raises core.errors.ConfigError for the first invalid value of its section; the
      check pass (train.check, evals.check_config) runs it before anything is built.
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
from types import ModuleType

import ml_collections

from ssl_jax.core import rundir, validate
from ssl_jax.core.errors import ConfigError
from ssl_jax.core.registry import Registry

_REGISTRY = Registry(__name__, "evaluator")


def available() -> list[str]:
  return _REGISTRY.available()


def get(name: str) -> ModuleType:
  return _REGISTRY.get(name)


def check_config(section: ml_collections.ConfigDict, modes: bool = True) -> None:
  """ConfigError for the first bad value of config.eval: its own fields (`modes`: also
  eval.modes, which `python -m ssl_jax.evaluate --mode` replaces), then each evaluator's
  section by that evaluator's check_config."""
  names = [m.strip() for m in str(section.modes).split(",") if m.strip() and m.strip() != "none"]
  unknown = [m for m in names if m not in available()] if modes else []
  if unknown:
    raise ConfigError(f"eval.modes={section.modes!r}: {', '.join(unknown)} is not an evaluator; "
                      f"available: {', '.join(available())} (or none)")
  validate.number("eval.batch_size", section.batch_size, low=1, integer=True)
  validate.number("eval.monitor_every_steps", section.monitor_every_steps, low=0, integer=True)
  for name in available():
    check = getattr(get(name), "check_config", None)
    if check is not None and name in section:
      check(section[name])


def input_kind(name: str) -> str:
  """"features" (scored on frozen features), "weights" (trains from the backbone) or
  "state" (uses the whole trained state and the method's own functions)."""
  return getattr(get(name), "INPUT", "features")


def feature_evaluators() -> list[str]:
  return [name for name in available() if input_kind(name) == "features"]


def default_config(**overrides) -> ml_collections.ConfigDict:
  """config.eval: every evaluation setting, for the entrypoint and the in-loop monitor."""
  config = ml_collections.ConfigDict()
  config.modes = "linear,knn"                # what experiments run after pretraining; "none" skips
  config.train_split = "train"               # features the probe / kNN bank is fit on
  config.test_split = "test"                 # features it is scored on
  config.batch_size = 512                    # feature-extraction batch (divisible by devices)
  config.random_init_seed = 1_000_003        # seed of the random-weights baseline
  config.monitor = "knn"                     # evaluator run during pretraining
  config.monitor_every_steps = 0             # its period in steps; 0 disables it
  config.monitor_train_split = "train[:10000]"  # the monitor's train features (kNN bank)
  config.monitor_test_split = "test[:2000]"     # the monitor's test features
  for name in available():             # each evaluator's own section
    config[name] = get(name).default_config()
  return validate.strict_update(config, overrides, "eval")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, with config.eval completed from today's defaults (older runs may lack
  newer fields)."""
  config = rundir.load_config(workdir)
  with config.unlocked():
    config.eval = _merged(default_config(), config.get("eval"))
  return config


def _merged(defaults: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """The defaults with a run's own config.eval fields on top (older runs may lack some)."""
  if overrides:
    with defaults.unlocked():
      defaults.update(ml_collections.ConfigDict(overrides))
  return defaults
