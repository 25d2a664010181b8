"""What every experiment shares: its argument, smoke mode, and the command line.

An experiment module is one method composed with a dataset preset
(ssl_jax/data/presets/): `get_config(arg)` where `arg` is "DATASET" or
"DATASET,smoke". Run it as

    python -m experiments.simclr --workdir W [--dataset cifar10] [--smoke] [--config.x=y]
    python -m ssl_jax.train --config experiments/simclr.py:cifar10 --workdir W   # same config

`--smoke` (big_vision's `runlocal`) shrinks the run to seconds: a few tiny steps on a
slice of the data, each backbone's smoke size (ResNet-10 at 1/16 width, a one-block ViT or Transformer) and
a small probe, so a test can run every
experiment and none of them rots.
"""
import sys
import time
from typing import Callable, Mapping

import ml_collections
from absl import app, flags
from ml_collections import config_flags


from experiments import recipes
from ssl_jax import evals, evaluate, models, train
from ssl_jax.core import errors, log, parallel, validate
from ssl_jax.data import presets
from ssl_jax.training import cpu_devices


def parse(arg: str | None, default_dataset: str = "fashion_mnist",
          variants: Mapping[str, Callable] | None = None) -> tuple[str, str | None, bool]:
  """"imagenet2012,vit_s16,smoke" -> ("imagenet2012", "vit_s16", True): the dataset preset,
  one of the module's VARIANTS (a named recipe on top of the dataset's, e.g. a paper's
  flagship ViT run) or None, and smoke mode."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  smoke = "smoke" in parts
  names = [p for p in parts if p != "smoke"]
  variant = next((n for n in names if variants and n in variants), None)
  names = [n for n in names if n != variant]
  if len(names) > 1:
    known = f"VARIANT one of {sorted(variants)}" if variants else "no variants"
    raise errors.ConfigError(f"experiment argument {arg!r}: expected 'DATASET[,VARIANT][,smoke]' "
                             f"({known})")
  dataset = names[0] if names else default_dataset
  if dataset not in presets.available():
    raise errors.ConfigError(f"dataset {dataset!r} has no preset; available: {presets.available()}")
  kind = presets.kind(default_dataset)  # the experiment's own modality
  if presets.kind(dataset) != kind:
    raise errors.ConfigError(f"dataset {dataset!r} holds {presets.kind(dataset)} data, not {kind} "
                             f"data: this experiment trains on {presets.names(kind)}")
  return dataset, variant, smoke


def parse_arg(arg: str | None, default_dataset: str = "fashion_mnist") -> tuple[str, bool]:
  """"cifar10,smoke" -> ("cifar10", True); None -> (default_dataset, False): the argument
  of a module without variants."""
  dataset, _, smoke = parse(arg, default_dataset)
  return dataset, smoke


def require_dataset(config: ml_collections.ConfigDict, variant: str, *datasets: str) -> None:
  """ConfigError unless the variant's config is built on one of `datasets` (data names)."""
  if config.data.name not in datasets:
    raise errors.ConfigError(f"variant {variant!r} is a recipe for {' or '.join(datasets)}, "
                             f"not {config.data.name!r}: pass --dataset {datasets[0]}")


def base_config(method: str, dataset: str) -> ml_collections.ConfigDict:
  """What every experiment starts from: the trainer's fields, `method`, the dataset
  preset's data section, an empty view-group section and the default evaluation."""
  config = train.default_config()
  config.method = method
  config.data = presets.data_config(dataset)
  config.views = ml_collections.ConfigDict()
  config.eval = evals.default_config()
  return config


# The small tokenizer smoke runs of text experiments read (scripts/setup.sh trains it).
SMOKE_TOKENIZER = ("wordpiece_512", 512)


def contract_dataset(module) -> str:
  """The dataset an experiment module's smoke config runs on for the method contract:
  its CONTRACT_DATASET (text methods: "fortunes"), else Fashion-MNIST."""
  return getattr(module, "CONTRACT_DATASET", "fashion_mnist")


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same experiment shrunk to seconds on 2 CPU cores (every method, every dataset)."""
  config.global_batch_size = 16
  config.total_steps = 3
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.optimizer.warmup_steps = 1
  config.data.train_split = "train[:256]"
  models.family(config.model.name).smoke(config.model)  # compiles in seconds
  if config.data.modality == "text":  # 32 tokens, the small tokenizer's 512 pieces
    config.data.max_length = 32
    config.data.tokenizer, config.data.vocab_size = SMOKE_TOKENIZER
    for name in ("max_length", "vocab_size"):
      if name in config.model:
        config.model[name] = config.data[name]
  for group in config.views.values():  # at most 2 views per group and image-sized crops
    group.count = min(group.count, 2)
    group.crop_size = min(group.crop_size, 32)
  config.eval.batch_size = 32
  config.eval.train_split = "train[:256]"
  config.eval.test_split = "test[:128]"
  config.eval.monitor_every_steps = 0
  config.eval.knn.ks = (5, 20)
  config.eval.linear.epochs = 2
  config.eval.linear.batch_size = 64
  config.eval.linear.learning_rates = (0.01, 0.1)
  config.eval.linear.weight_decays = (0.0,)
  config.eval.finetune.epochs = 2
  config.eval.finetune.batch_size = 32
  config.eval.finetune.warmup_epochs = 0
  return config


def check_overrides(argv: list[str], config: ml_collections.ConfigDict) -> None:
  """A `--config.a.b=...` naming a field the config lacks -> one clear line, exit 2."""
  for arg in argv[1:]:
    if arg.startswith("--config."):
      try:
        validate.find_field(config, arg[len("--config."):].split("=", 1)[0])
      except errors.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _pre_parse(argv: list[str]) -> tuple[str | None, str | None, bool, bool]:
  """--dataset, --variant, --smoke and --validation choose the config, so they are read
  before absl parses flags."""
  dataset, variant, smoke_run, validation = None, None, False, False
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--dataset="):
      dataset = arg.split("=", 1)[1]
    elif arg == "--dataset" and i + 1 < len(argv):
      dataset = argv[i + 1]
    elif arg.startswith("--variant="):
      variant = arg.split("=", 1)[1]
    elif arg == "--variant" and i + 1 < len(argv):
      variant = argv[i + 1]
    elif arg in ("--smoke", "--smoke=true", "--smoke=True"):
      smoke_run = True
    elif arg in ("--validation", "--validation=true", "--validation=True"):
      validation = True
  return dataset, variant, smoke_run, validation


def _minutes(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60} min {seconds % 60:02d} s"


def wall_time_line(pretrain_s: float, eval_s: float | None) -> str:
  """The closing line of a command: its wall time, split into pretraining (with start-up
  and compilation) and evaluation."""
  if eval_s is None:
    return f"wall time {_minutes(pretrain_s)} (pretraining; no evaluation)"
  pretrain_s, eval_s = round(pretrain_s), round(eval_s)  # the parts add up to the total
  return (f"wall time {_minutes(pretrain_s + eval_s)} (pretraining {_minutes(pretrain_s)}, "
          f"evaluation {_minutes(eval_s)})")


def main(get_config) -> None:
  """Parses --workdir, --dataset, --smoke and `--config.x=y` overrides, trains, evaluates.

  Evaluation runs the modes in config.eval.modes (e.g. "linear,knn") once training is
  complete; pass --config.eval.modes=none to pretrain only. A run stopped by SIGTERM or
  Ctrl-C exits 0 after its checkpoint and evaluates nothing: the same command resumes it,
  finishes training, then evaluates. The last line on stderr is the wall time, from here
  (after the imports) to the end.
  """
  started = time.perf_counter()
  dataset, variant, smoke_run, validation = _pre_parse(sys.argv)
  try:
    parts = [dataset or "", variant or "", "smoke" if smoke_run else ""]
    config = get_config(",".join(p for p in parts if p))
    if validation:
      recipes.validation_split(config)
  except errors.ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
  check_overrides(sys.argv, config)
  flags.DEFINE_string("dataset", None, f"dataset preset: one of {presets.available()}")
  flags.DEFINE_string("variant", None, "a named recipe of the experiment on top of its "
                      "dataset's (the module's VARIANTS, e.g. dino's vit_s16)")
  flags.DEFINE_bool("smoke", False, "shrink the run to seconds (a smoke test)")
  flags.DEFINE_bool("validation", False, "hold out the last 10% of train as the split every "
                    "evaluation scores (choosing a recipe without reading test)")
  config_flags.DEFINE_config_dict("config", config, "Experiment config; override fields "
                                  "as --config.total_steps=100.")
  flags.DEFINE_string("workdir", None, "Where checkpoints, config.json, metrics and eval/ go; "
                      "an existing workdir is resumed from its latest checkpoint.")
  flags.mark_flag_as_required("workdir")

  def run(argv):
    del argv
    log.quiet_libraries()
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    with log.fail_cleanly():
      cpu_devices.apply(config)  # before jax starts its backends
      parallel.initialize_distributed()
      state = train.train(config, workdir)
      if not train.is_complete(state, config):
        log.Progress(config.total_steps, 0).message(
            f"training stopped at step {int(state.step)} of {config.total_steps}; no evaluation. "
            "Run the same command again to finish training and evaluate.")
        return
      modes = [m for m in config.eval.modes.split(",") if m and m != "none"]
      trained = time.perf_counter()
      if modes:
        evaluate.run(workdir, modes)
      finished = time.perf_counter()
      log.Progress(config.total_steps, 0).message(
          wall_time_line(trained - started, finished - trained if modes else None))

  app.run(run)
