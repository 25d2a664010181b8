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

import ml_collections
from absl import app, flags
from ml_collections import config_flags


from ssl_jax import evals, evaluate, models, train
from ssl_jax.core import errors, log, parallel, validate
from ssl_jax.data import presets


def parse_arg(arg: str | None, default_dataset: str = "fashion_mnist") -> tuple[str, bool]:
  """"cifar10,smoke" -> ("cifar10", True); None -> (default_dataset, False)."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  smoke = "smoke" in parts
  names = [p for p in parts if p != "smoke"]
  if len(names) > 1:
    raise errors.ConfigError(f"experiment argument {arg!r}: expected 'DATASET' or 'DATASET,smoke'")
  dataset = names[0] if names else default_dataset
  if dataset not in presets.available():
    raise errors.ConfigError(f"dataset {dataset!r} has no preset; available: {presets.available()}")
  return dataset, smoke


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


def _pre_parse(argv: list[str]) -> tuple[str | None, bool]:
  """--dataset and --smoke choose the config, so they are read before absl parses flags."""
  dataset, smoke_run = None, False
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--dataset="):
      dataset = arg.split("=", 1)[1]
    elif arg == "--dataset" and i + 1 < len(argv):
      dataset = argv[i + 1]
    elif arg in ("--smoke", "--smoke=true", "--smoke=True"):
      smoke_run = True
  return dataset, smoke_run


def main(get_config) -> None:
  """Parses --workdir, --dataset, --smoke and `--config.x=y` overrides, trains, evaluates.

  Evaluation runs the modes in config.eval.modes (e.g. "linear,knn") once training is
  complete; pass --config.eval.modes=none to pretrain only. A run stopped by SIGTERM or
  Ctrl-C exits 0 after its checkpoint and evaluates nothing: the same command resumes it,
  finishes training, then evaluates.
  """
  dataset, smoke_run = _pre_parse(sys.argv)
  try:
    config = get_config(f"{dataset or ''}{',smoke' if smoke_run else ''}")
  except errors.ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
  check_overrides(sys.argv, config)
  flags.DEFINE_string("dataset", None, f"dataset preset: one of {presets.available()}")
  flags.DEFINE_bool("smoke", False, "shrink the run to seconds (a smoke test)")
  config_flags.DEFINE_config_dict("config", config, "Experiment config; override fields "
                                  "as --config.total_steps=100.")
  flags.DEFINE_string("workdir", None, "Where checkpoints, config.json, metrics and eval/ go; "
                      "an existing workdir is resumed from its latest checkpoint.")
  flags.mark_flag_as_required("workdir")

  def run(argv):
    del argv
    log.quiet_libraries()
    parallel.initialize_distributed()
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    with log.fail_cleanly():
      state = train.train(config, workdir)
      if not train.is_complete(state, config):
        log.Progress(config.total_steps, 0).message(
            f"training stopped at step {int(state.step)} of {config.total_steps}; no evaluation. "
            "Run the same command again to finish training and evaluate.")
        return
      modes = [m for m in config.eval.modes.split(",") if m and m != "none"]
      if modes:
        evaluate.run(workdir, modes)

  app.run(run)
