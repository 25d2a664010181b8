"""Turns a pretraining workdir into numbers: linear probe and/or kNN top-1.

    python -m ssl_jax.evaluate --workdir W --mode linear        # or knn, or linear,knn

Loads W/config.json and the latest checkpoint in W, extracts frozen features (jitted,
batched, sharded over all devices) for the train and test splits, and scores them next
to two baselines run through the same probe: the same architecture with random weights,
and the raw pixels. Writes W/eval/<mode>.json and prints a table.
"""
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags

from ssl_jax import checkpoint, log, parallel, train
from ssl_jax.data import sources
from ssl_jax.evals import features as features_lib
from ssl_jax.evals import knn, linear
from ssl_jax.methods import common

MODES = ("linear", "knn")


class NonFiniteFeaturesError(ValueError):
  """The encoder produced NaN or infinite features."""


def default_config() -> ml_collections.ConfigDict:
  """Evaluation settings; an experiment's config.eval overrides them."""
  config = ml_collections.ConfigDict()
  config.modes = "linear,knn"                # what experiments run after pretraining; "none" skips
  config.train_split = "train"               # features the probe / kNN bank is fit on
  config.test_split = "test"                 # features it is scored on
  config.linear = linear.default_config()    # linear-probe search grid and schedule
  config.random_init_seed = 1_000_003        # seed of the random-weights baseline
  return config


def _log(text: str) -> None:
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


def _extract_all(encode, config, mesh, name: str) -> dict:
  data, settings = config.data, config.eval
  out = {}
  for split_name, split in (("train", settings.train_split), ("test", settings.test_split)):
    source = sources.get_source(data.name, split, data.data_dir)
    start = time.time()
    out[split_name] = features_lib.extract(encode, source, mesh, config.eval_batch_size,
                                           image_size=data.get("host_resize"))
    features = out[split_name][0]
    bad = _count_nonfinite(features)
    if bad:
      raise NonFiniteFeaturesError(
          f"the {name} features of {split} hold {bad} non-finite values (of {features.size}): "
          "the checkpoint's network diverged, and no probe can score it. Evaluate an earlier "
          "checkpoint with --step, or retrain with a lower learning rate.")
    _log(f"  {name}: {split} features {out[split_name][0].shape} in {time.time() - start:.1f}s")
  return out


def _count_nonfinite(tree) -> int:
  return sum(int(np.size(x) - np.count_nonzero(np.isfinite(x)))
             for x in jax.tree.leaves(parallel.to_host(tree))
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def feature_sets(workdir: str, config, mesh, step: int | None = None) -> tuple[dict, int]:
  """{"pretrained" | "random_init" | "raw_pixels": {"train": (x, y), "test": (x, y)}}."""
  method, init, _ = train.build(config, mesh)
  checkpoints = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, async_save=False)
  state = checkpoints.restore(train.abstract_state(init, jax.random.PRNGKey(config.seed), mesh),
                              step=step)
  checkpoints.close()
  bad = _count_nonfinite((state.params, state.extra))
  if bad:
    # Checked on the weights, not only on the features: XLA:CPU's fused ReLU can turn a NaN
    # into 0, so a diverged network may yield finite, all-zero features.
    raise NonFiniteFeaturesError(
        f"the checkpoint at step {int(state.step)} in {workdir} holds {bad} non-finite values: "
        "its network diverged, and no probe can score it. Evaluate an earlier checkpoint with "
        "--step, or retrain with a lower learning rate.")
  random_state = init(jax.random.PRNGKey(config.eval.random_init_seed))
  encode = jax.jit(lambda params, extra, images: method.encode(params, extra, images, config))
  pixels = jax.jit(lambda images: common.evaluation_images(images, config).reshape(images.shape[0], -1))
  sets = {
      "pretrained": _extract_all(lambda x: encode(state.params, state.extra, x), config, mesh,
                                 "pretrained"),
      "random_init": _extract_all(lambda x: encode(random_state.params, random_state.extra, x),
                                  config, mesh, "random_init"),
      "raw_pixels": _extract_all(pixels, config, mesh, "raw_pixels"),
  }
  return sets, int(state.step)


def score(mode: str, sets: dict, config) -> dict:
  num_classes = sources.dataset_info(config.data.name, config.data.data_dir).num_classes
  results = {}
  for name, data in sets.items():
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    start = time.time()
    if mode == "linear":
      results[name] = linear.linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes,
                                          config=config.eval.linear)
    else:
      accuracy = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=num_classes,
                                  ks=tuple(config.knn.ks), temperature=config.knn.temperature)
      results[name] = {"top1": accuracy[min(accuracy)],
                       "top1_by_k": {str(k): v for k, v in accuracy.items()}}
    _log(f"  {mode} on {name}: top1 {results[name]['top1']:.4f} ({time.time() - start:.1f}s)")
    if results[name].get("lr_at_grid_edge"):
      _log(f"  note: the {name} probe chose lr {results[name]['learning_rate']:g}, an edge of "
           f"config.eval.linear.learning_rates; widen the grid if that edge is the top")
  return results


def run(workdir: str, modes=MODES, step: int | None = None) -> dict:
  """Evaluates `workdir`; returns {mode: report} and writes workdir/eval/<mode>.json."""
  modes = tuple(modes)
  bad = [m for m in modes if m not in MODES]
  if bad or not modes:
    raise ValueError(f"--mode {','.join(modes)}: expected one or more of {MODES}, comma-separated")
  config = load_run_config(workdir)
  mesh = parallel.make_mesh()
  _log(f"evaluating {workdir} ({', '.join(modes)}) on {jax.device_count()} device(s)")
  sets, trained_step = feature_sets(workdir, config, mesh, step)
  reports = {}
  for mode in modes:
    results = score(mode, sets, config)
    report = {"mode": mode, "top1": results["pretrained"]["top1"], "checkpoint_step": trained_step,
              "dataset": config.data.name, "method": config.method,
              "train_split": config.eval.train_split, "test_split": config.eval.test_split,
              "details": results,
              "baselines": {name: results[name]["top1"] for name in ("random_init", "raw_pixels")}}
    reports[mode] = report
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
      with open(os.path.join(workdir, "eval", f"{mode}.json"), "w") as f:
        json.dump(report, f, indent=2)
  if jax.process_index() == 0:
    print(table(reports))
  return reports


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, with config.eval completed from this module's defaults."""
  config = train.load_config(workdir)
  with config.unlocked():
    config.eval = _merged(default_config(), config.get("eval"))
  return config


def _merged(defaults: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """The defaults with a run's own config.eval fields on top (older runs may lack some)."""
  if overrides:
    defaults.update(ml_collections.ConfigDict(overrides))
  return defaults


def table(reports: dict) -> str:
  """A small text table: one row per mode, pretrained next to both baselines."""
  lines = [f"{'mode':<8} {'pretrained':>10} {'random_init':>12} {'raw_pixels':>11}"]
  for mode, report in reports.items():
    b = report["baselines"]
    lines.append(f"{mode:<8} {report['top1']:>10.4f} {b['random_init']:>12.4f} {b['raw_pixels']:>11.4f}")
  return "\n".join(lines)


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  log.quiet_libraries()
  parallel.initialize_distributed()
  with log.fail_cleanly():
    run(flags.FLAGS.workdir, flags.FLAGS.mode.split(","), flags.FLAGS.step)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Workdir of a pretraining run (holds config.json, checkpoints/).")
  flags.DEFINE_string("mode", "linear", "linear, knn, or both comma-separated: linear,knn.")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the latest.")
  app.run(main)
