"""Turns a pretraining workdir into numbers: any evaluator of ssl_jax/evals/, by name.

    python -m ssl_jax.evaluate --workdir W --mode linear        # or knn, or linear,knn
    python -m ssl_jax.evaluate --workdir W --mode finetune [--init F.safetensors]
    python -m ssl_jax.evaluate --workdir W --mode finetune --eval finetune.epochs=3 \
        --eval 'train_split=train[:10%]'          # any config.eval field, strictly

Loads W/config.json and the latest (or --step) checkpoint in W (params and method_state
only). Feature evaluators (knn, linear): extracts frozen features with the method's
`encode` (jitted, batched, sharded over all devices) for the train and test splits, and
scores them next to two baselines run through the same protocol: the same network with
random weights, and the raw input (from the dataset's modality). Weight evaluators
(finetune): hands the method's `backbone` variables, and the same backbone with random
weights, to the evaluator, which trains its own network; `--init F` takes the pretrained
backbone from an exported file (`python -m ssl_jax.export`) instead.
Writes W/eval/<mode>.json, each with its `protocol` record, and prints a table.
"""
import ast
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags

from ssl_jax import checkpoint, engine, evals, log, methods, parallel, validate
from ssl_jax.data import modality, preprocess, sources
from ssl_jax.evals import _features


class NonFiniteFeaturesError(ValueError):
  """The checkpoint or the features it gives hold NaN or infinite values."""


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
  for name in evals.available():             # each evaluator's own section
    config[name] = evals.get(name).default_config()
  return validate.strict_update(config, overrides, "eval")


def _log(text: str) -> None:
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


def _count_nonfinite(tree) -> int:
  return sum(int(np.size(x) - np.count_nonzero(np.isfinite(x)))
             for x in jax.tree.leaves(parallel.to_host(tree))
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def extract_splits(encode, config, mesh, splits: dict, name: str) -> dict:
  """{split_name: ({feature_set: x}, y)} for each split, checked finite."""
  data = config.data
  out = {}
  for split_name, split in splits.items():
    source = sources.get_source(data.name, split, data.data_dir)
    start = time.time()
    features, labels = _features.extract(
        encode, source, mesh, config.eval.batch_size, keys=tuple(data.features),
        label_key=data.label_key, preprocess=preprocess.from_config(data))
    for set_name, x in features.items():
      bad = _count_nonfinite(x)
      if bad:
        raise NonFiniteFeaturesError(
            f"the {name} {set_name} of {split} hold {bad} non-finite values (of {x.size}): "
            "no probe can score them. Evaluate an earlier checkpoint with --step.")
    out[split_name] = (features, labels)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in features.items())
    _log(f"  {name}: {split} {shapes} in {time.time() - start:.1f}s")
  return out


def encoder(method, config):
  """The jitted encode(params, method_state, batch). Built once and bound to each set of
  weights (`bind`), so the pretrained and random-init networks share one compilation."""
  return jax.jit(lambda p, s, batch: method.encode(p, s, batch, config))


def bind(encode, params, method_state):
  return lambda batch: encode(params, method_state, batch)


class Monitor:
  """config.eval.monitor on the monitor splits during pretraining (pretrained features only)."""

  def __init__(self, config, mesh, method):
    self.config, self.mesh, self.method = config, mesh, method
    self.evaluator = evals.get(config.eval.monitor)
    if evals.input_kind(config.eval.monitor) != "features":
      raise validate.ConfigError(f"eval.monitor={config.eval.monitor!r} trains a network of its "
                                 f"own; the monitor runs feature evaluators: {evals.feature_evaluators()}")
    self.encode = encoder(method, config)
    self.num_classes = sources.dataset_info(config.data.name, config.data.data_dir,
                                            config.data.label_key).num_classes

  def __call__(self, params, method_state) -> dict:
    settings = self.config.eval
    sets = extract_splits(bind(self.encode, params, method_state), self.config,
                          self.mesh, {"train": settings.monitor_train_split,
                                      "test": settings.monitor_test_split}, "monitor")
    (train_x, train_y), (test_x, test_y) = sets["train"], sets["test"]
    primary = next(iter(train_x))
    result = self.evaluator.evaluate((train_x[primary], train_y), (test_x[primary], test_y),
                                     num_classes=self.num_classes,
                                     config=settings[settings.monitor])
    return {f"{settings.monitor}_{key}": value for key, value in _scalars(result).items()}


def _scalars(result: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in result.items():
    if isinstance(value, dict):
      out.update(_scalars(value, f"{prefix}{key}_"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out[f"{prefix}{key}"] = value
  return out


def restore(workdir: str, config, mesh, step: int | None = None) -> tuple[dict, tuple, int]:
  """(params and method_state of the checkpoint, the same of a random init, its step).

  Only params and method_state are restored: no optimizer is built or read."""
  method = methods.get(config.method)
  example = engine.example_batch(config)
  checkpoints = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, async_save=False)
  fields = checkpoints.restore_fields(
      engine.abstract_model_fields(method, config, mesh, example), step=step)
  checkpoints.close()
  trained_step = int(fields["step"])
  bad = _count_nonfinite((fields["params"], fields["method_state"]))
  if bad:
    # Checked on the weights, not only on the features: XLA:CPU's fused ReLU can turn a NaN
    # into 0, so a diverged network may yield finite, all-zero features.
    raise NonFiniteFeaturesError(
        f"the checkpoint at step {trained_step} in {workdir} holds {bad} non-finite values: "
        "its network diverged, and no probe can score it. Evaluate an earlier checkpoint with "
        "--step, or retrain with a lower learning rate.")
  random_init = jax.jit(engine.model_init(method, config, example),
                        out_shardings=parallel.replicated(mesh))
  return fields, random_init(jax.random.PRNGKey(config.eval.random_init_seed)), trained_step


def backbones(workdir: str, config, mesh, step: int | None = None,
              init: str | None = None) -> tuple[dict, int, str]:
  """({"pretrained", "random_init": backbone variables}, checkpoint step, where the
  pretrained weights came from), through the method's `backbone`."""
  method = methods.get(config.method)
  if not callable(getattr(method, "backbone", None)):
    raise validate.ConfigError(f"method {config.method!r} has no backbone(params, method_state, "
                               "config): weight evaluators cannot build its network")
  fields, (random_params, random_state), trained_step = restore(workdir, config, mesh, step)
  pretrained = method.backbone(fields["params"], fields["method_state"], config)
  source = f"{workdir} checkpoint step {trained_step}"
  if init:
    from ssl_jax import export  # pylint: disable=import-outside-toplevel
    pretrained, sidecar = export.load(init)
    if sidecar["model"] != config.model.to_dict():
      raise validate.ConfigError(f"--init {init} holds a {sidecar['model']} backbone; the run's "
                                 f"config.model is {config.model.to_dict()}")
    trained_step, source = sidecar["checkpoint_step"], f"{init} ({sidecar['method']} step {trained_step})"
  return ({"pretrained": parallel.replicate(pretrained, mesh),
           "random_init": method.backbone(random_params, random_state, config)},
          trained_step, source)


def feature_sets(workdir: str, config, mesh, step: int | None = None) -> tuple[dict, int]:
  """{"pretrained" | "random_init" | "raw_input": {"train": ({set: x}, y), "test": ...}}."""
  method = methods.get(config.method)
  fields, (random_params, random_method_state), trained_step = restore(workdir, config, mesh, step)
  raw = jax.jit(lambda batch: modality.raw_features(batch, config))
  splits = {"train": config.eval.train_split, "test": config.eval.test_split}
  encode = encoder(method, config)
  sets = {
      "pretrained": extract_splits(bind(encode, fields["params"], fields["method_state"]),
                                   config, mesh, splits, "pretrained"),
      "random_init": extract_splits(bind(encode, random_params, random_method_state),
                                    config, mesh, splits, "random_init"),
      "raw_input": extract_splits(raw, config, mesh, splits, "raw_input"),
  }
  return sets, trained_step


def score(mode: str, sets: dict, config) -> dict:
  """{"pretrained" (primary feature set), "pretrained/<set>" (others), "random_init",
  "raw_input": evaluator result}."""
  evaluator, settings = evals.get(mode), config.eval[mode]
  num_classes = sources.dataset_info(config.data.name, config.data.data_dir,
                                     config.data.label_key).num_classes
  results = {}
  for name, data in sets.items():
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    for index, set_name in enumerate(train_x):
      label = name if index == 0 else f"{name}/{set_name}"
      start = time.time()
      results[label] = evaluator.evaluate((train_x[set_name], train_y),
                                          (test_x[set_name], test_y),
                                          num_classes=num_classes, config=settings)
      _log(f"  {mode} on {label}: top1 {results[label]['top1']:.4f} ({time.time() - start:.1f}s)")
      if results[label].get("lr_at_grid_edge"):
        _log(f"  note: the {label} probe chose lr {results[label]['learning_rate']:g}, an edge "
             f"of config.eval.linear.learning_rates; widen the grid if that edge is the top")
  return results


def _checked_modes(modes) -> tuple[str, ...]:
  modes = tuple(m.strip() for m in modes if m.strip())
  bad = [m for m in modes if m not in evals.available()]
  if bad or not modes:
    raise validate.ConfigError(f"--mode {','.join(modes)}: expected one or more of "
                               f"{evals.available()}, comma-separated")
  return modes


def run(workdir: str, modes=None, step: int | None = None,
        init: str | None = None, overrides=()) -> dict:
  """Evaluates `workdir`; returns {mode: report} and writes workdir/eval/<mode>.json.

  `modes`: evaluator names; None runs the ones the run was configured with
  (config.eval.modes, what its experiment evaluates at the end of training).

  `init`: an exported backbone (ssl_jax.export) that weight evaluators start from instead
  of the checkpoint's. `overrides`: "FIELD=VALUE" strings on the run's config.eval (e.g.
  "finetune.epochs=3", "train_split=train[:10%]"); every report records its protocol."""
  configured = modes is None
  if not configured:
    modes = _checked_modes(modes)
  config = load_run_config(workdir)
  apply_overrides(config.eval, overrides)
  if configured:
    modes = _checked_modes(m for m in config.eval.modes.split(",") if m != "none")
  feature_modes = [m for m in modes if evals.input_kind(m) == "features"]
  others = [m for m in modes if evals.input_kind(m) != "weights"]
  if init and others:
    raise validate.ConfigError(f"--init is read by weight evaluators only; {others} score "
                               "the checkpoint itself (an export's features are the same, bitwise)")
  mesh = parallel.make_mesh()
  _log(f"evaluating {workdir} ({', '.join(modes)}) on {jax.device_count()} device(s)")
  reports = {}
  if feature_modes:
    sets, trained_step = feature_sets(workdir, config, mesh, step)
    primary = next(iter(sets["pretrained"]["train"][0]))
    for mode in feature_modes:
      results = score(mode, sets, config)
      reports[mode] = _report(
          mode, results, config, trained_step,
          features=f"{config.method}.encode -> {primary!r} (frozen, train=False)",
          baselines={"random_init": f"same network, seed {config.eval.random_init_seed}",
                     "raw_input": f"{config.data.modality} inputs, flattened"})
  state_modes = [m for m in modes if evals.input_kind(m) == "state"]
  if state_modes:
    fields, random_fields, trained_step = restore(workdir, config, mesh, step)
    states = {"pretrained": (fields["params"], fields["method_state"]),
              "random_init": random_fields}
    for mode in state_modes:
      module = evals.get(mode)
      results = module.evaluate_state(states, method=methods.get(config.method), run_config=config,
                                      mesh=mesh, config=config.eval[mode], log=_log)
      reports[mode] = _report(mode, results, config, trained_step, features=module.FEATURES,
                              baselines=module.BASELINES, score=module.SCORE)
  weight_modes = [m for m in modes if evals.input_kind(m) == "weights"]
  if weight_modes:
    variables, trained_step, source = backbones(workdir, config, mesh, step, init)
    num_classes = sources.dataset_info(config.data.name, config.data.data_dir,
                                       config.data.label_key).num_classes
    for mode in weight_modes:
      results = evals.get(mode).evaluate_weights(
          variables, run_config=config, mesh=mesh, num_classes=num_classes,
          config=config.eval[mode], log=_log)
      reports[mode] = _report(
          mode, results, config, trained_step,
          features=f"{config.method}.backbone from {source}, trained further",
          baselines={"random_init": f"same architecture and recipe from random weights (seed "
                                    f"{config.eval.random_init_seed}): supervised from scratch"})
  for mode, report in reports.items():
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
      with open(os.path.join(workdir, "eval", f"{mode}.json"), "w") as f:
        json.dump(report, f, indent=2)
  if jax.process_index() == 0:
    print(table(reports))
  return reports


def _report(mode: str, results: dict, config, trained_step: int, *, features: str,
            baselines: dict, score: str = "top1") -> dict:
  """eval/<mode>.json: the pretrained `score` (top-1; the held-out loss for the objective
  evaluator) next to each baseline's, the protocol and every detail."""
  protocol = {"mode": mode, **evals.get(mode).protocol(config.eval[mode]),
              "train_split": config.eval.train_split, "test_split": config.eval.test_split,
              "checkpoint_step": trained_step, "features": features, "baselines": baselines}
  return {"mode": mode, score: results["pretrained"][score], "checkpoint_step": trained_step,
          "dataset": config.data.name, "method": config.method, "protocol": protocol,
          "details": results, "baselines": {name: results[name][score] for name in baselines}}


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, with config.eval completed from this module's defaults."""
  config = engine.load_config(workdir)
  with config.unlocked():
    config.eval = _merged(default_config(), config.get("eval"))
  return config


def apply_overrides(section: ml_collections.ConfigDict, overrides) -> None:
  """"a.b=value" strings onto `section` (values as Python literals, else strings); a field
  the section lacks is an error, as everywhere in the configs."""
  for override in overrides:
    path, sep, text = override.partition("=")
    if not sep:
      raise validate.ConfigError(f"--eval {override!r}: expected FIELD=VALUE, e.g. finetune.epochs=3")
    *parents, name = path.strip().split(".")
    where = section
    for i, part in enumerate(parents + [name]):
      if not isinstance(where, ml_collections.ConfigDict) or part not in where:
        valid = list(where.keys()) if isinstance(where, ml_collections.ConfigDict) else []
        raise validate.ConfigError(validate.unknown_field_message(
            ".".join(["eval", *parents[:i]]), part, valid))
      if i < len(parents):
        where = where[part]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    if isinstance(where[name], tuple) and isinstance(value, list):
      value = tuple(value)
    with where.unlocked():
      where[name] = value


def _merged(defaults: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """The defaults with a run's own config.eval fields on top (older runs may lack some)."""
  if overrides:
    with defaults.unlocked():
      defaults.update(ml_collections.ConfigDict(overrides))
  return defaults


def table(reports: dict) -> str:
  """A small text table: one row per mode, pretrained next to both baselines."""
  lines = [f"{'mode':<9} {'pretrained':>10} {'random_init':>12} {'raw_input':>10}"]
  cell = lambda value, width: f"{value:>{width}.4f}" if value is not None else f"{'-':>{width}}"
  for mode, report in reports.items():
    b = report["baselines"]
    score = report["top1"] if "top1" in report else report["loss"]
    lines.append(f"{mode:<9} {score:>10.4f} {cell(b.get('random_init'), 12)} "
                 f"{cell(b.get('raw_input'), 10)}" + ("" if "top1" in report else "  (loss)"))
  return "\n".join(lines)


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  log.quiet_libraries()
  parallel.initialize_distributed()
  with log.fail_cleanly():
    modes = flags.FLAGS.mode.split(",") if flags.FLAGS.mode else None
    run(flags.FLAGS.workdir, modes, flags.FLAGS.step, flags.FLAGS.init,
        flags.FLAGS.eval or ())


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Workdir of a pretraining run (holds config.json, checkpoints/).")
  flags.DEFINE_string("mode", None, f"evaluators, comma-separated: {', '.join(evals.available())}; "
                      "default: the run's own config.eval.modes.")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the latest.")
  flags.DEFINE_string("init", None, "Weight evaluators (finetune): start from this exported "
                      "backbone (python -m ssl_jax.export) instead of the checkpoint's.")
  flags.DEFINE_multi_string("eval", None, "FIELD=VALUE on the run's config.eval, repeatable: "
                            "--eval finetune.epochs=3 --eval 'train_split=train[:10%]'.")
  app.run(main)
