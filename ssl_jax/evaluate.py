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
import time

import jax
from absl import app, flags

from ssl_jax import evals, export, methods, models
from ssl_jax.core import errors, log, parallel, rundir, validate
from ssl_jax.data import modality, sources
from ssl_jax.evals.lib import extraction, weights
from ssl_jax.training import cpu_devices


def backbones(workdir: str, config, mesh, step: int | None = None,
              init: str | None = None) -> tuple[dict, int, str]:
  """({"pretrained", "random_init": backbone variables}, checkpoint step, where the
  pretrained weights came from), through the method's `backbone`."""
  method = methods.get(config.method)
  if not callable(getattr(method, "backbone", None)):
    raise errors.ConfigError(f"method {config.method!r} has no backbone(params, method_state, "
                               "config): weight evaluators cannot build its network")
  fields, (random_params, random_state), trained_step = weights.restore(workdir, config, mesh, step)
  pretrained = method.backbone(fields["params"], fields["method_state"], config)
  source = f"{workdir} checkpoint step {trained_step}"
  if init:
    pretrained, sidecar = export.load(init)
    if sidecar["model"] != config.model.to_dict():
      raise errors.ConfigError(f"--init {init} holds a {sidecar['model']} backbone; the run's "
                                 f"config.model is {config.model.to_dict()}")
    trained_step, source = sidecar["checkpoint_step"], f"{init} ({sidecar['method']} step {trained_step})"
  shared = weights.shares_random_backbone(method, config)
  random_init = (weights.random_backbone(config, mesh) if shared
                 else method.backbone(random_params, random_state, config))
  return ({"pretrained": parallel.replicate(pretrained, mesh), "random_init": random_init},
          trained_step, source)


def feature_sets(workdir: str, config, mesh, step: int | None = None) -> tuple[dict, int]:
  """{"pretrained" | "random_init" | "raw_input": {"train": ({set: x}, y), "test": ...}}."""
  method = methods.get(config.method)
  fields, (random_params, random_method_state), trained_step = weights.restore(workdir, config, mesh, step)
  raw = jax.jit(lambda batch: modality.raw_features(batch, config))
  splits = {"train": config.eval.train_split, "test": config.eval.test_split}
  encode = extraction.encoder(method, config)
  sets = {
      "pretrained": extraction.extract_splits(extraction.bind(encode, fields["params"], fields["method_state"]),
                                   config, mesh, splits, "pretrained"),
      "random_init": extraction.extract_splits(
          random_encoder(method, config, mesh, random_params, random_method_state),
          config, mesh, splits, "random_init"),
      "raw_input": extraction.extract_splits(raw, config, mesh, splits, "raw_input"),
  }
  return sets, trained_step


def random_encoder(method, config, mesh, random_params, random_method_state):
  """batch -> the random-init baseline's features: the shared random backbone's
  (weights.random_backbone: the same weights for every method with this backbone), or,
  for a method that feeds its backbone another input, its own encode at random init."""
  if not weights.shares_random_backbone(method, config):
    return extraction.bind(extraction.encoder(method, config), random_params, random_method_state)
  variables = weights.random_backbone(config, mesh)
  encode = jax.jit(lambda v, batch: models.encode(v, batch, config))
  return lambda batch: encode(variables, batch)


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
      extraction.log(f"  {mode} on {label}: top1 {results[label]['top1']:.4f} ({time.time() - start:.1f}s)")
      if results[label].get("lr_at_grid_edge"):
        extraction.log(f"  note: the {label} probe chose lr {results[label]['learning_rate']:g}, an edge "
             f"of config.eval.linear.learning_rates; widen the grid if that edge is the top")
  return results


def _checked_modes(modes) -> tuple[str, ...]:
  modes = tuple(m.strip() for m in modes if m.strip())
  bad = [m for m in modes if m not in evals.available()]
  if bad or not modes:
    raise errors.ConfigError(f"--mode {','.join(modes)}: expected one or more of "
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
  config = evals.load_run_config(workdir)
  validate.apply_overrides(config.eval, overrides, "eval")
  if configured:
    modes = _checked_modes(m for m in config.eval.modes.split(",") if m != "none")
  evals.check_config(config.eval, modes=False)  # the settings, with the overrides
  feature_modes = [m for m in modes if evals.input_kind(m) == "features"]
  others = [m for m in modes if evals.input_kind(m) != "weights"]
  if init and others:
    raise errors.ConfigError(f"--init is read by weight evaluators only; {others} score "
                               "the checkpoint itself (an export's features are the same, bitwise)")
  rundir.check_eval_writable(workdir)
  mesh = parallel.make_mesh()
  extraction.log(f"evaluating {workdir} ({', '.join(modes)}) on {jax.device_count()} device(s)")
  reports = {}
  if feature_modes:
    sets, trained_step = feature_sets(workdir, config, mesh, step)
    primary = next(iter(sets["pretrained"]["train"][0]))
    for mode in feature_modes:
      results = score(mode, sets, config)
      reports[mode] = _report(
          mode, results, config, trained_step,
          features=f"{config.method}.encode -> {primary!r} (frozen, train=False)",
          baselines={"random_init": f"same backbone, random weights from seed "
                                    f"{config.eval.random_init_seed} (shared by every method "
                                    "with this backbone)",
                     "raw_input": modality.RAW_INPUT[config.data.modality]})
  state_modes = [m for m in modes if evals.input_kind(m) == "state"]
  if state_modes:
    fields, random_fields, trained_step = weights.restore(workdir, config, mesh, step)
    states = {"pretrained": (fields["params"], fields["method_state"]),
              "random_init": random_fields}
    for mode in state_modes:
      module = evals.get(mode)
      results = module.evaluate_state(states, method=methods.get(config.method), run_config=config,
                                      mesh=mesh, config=config.eval[mode], log=extraction.log)
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
          config=config.eval[mode], log=extraction.log)
      reports[mode] = _report(
          mode, results, config, trained_step,
          features=f"{config.method}.backbone from {source}, trained further",
          baselines={"random_init": f"same architecture and recipe from random weights (seed "
                                    f"{config.eval.random_init_seed}): supervised from scratch"})
  for mode, report in reports.items():
    rundir.write_eval(workdir, mode, report)
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
  with log.fail_cleanly():
    cpu_devices.apply(evals.load_run_config(flags.FLAGS.workdir))  # before jax starts
    parallel.initialize_distributed()
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
