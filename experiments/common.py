"""The command line every experiment shares: pretrain into --workdir, then evaluate."""
from absl import app, flags
from ml_collections import config_flags

from ssl_jax import evaluate, log, parallel, train


def main(get_config) -> None:
  """Parses `--workdir` and `--config.x=y` overrides of get_config(), trains, evaluates.

  Evaluation runs the modes in config.eval.modes (e.g. ("linear", "knn")) once training
  is complete; pass --config.eval.modes=none to pretrain only. A run stopped by SIGTERM or
  Ctrl-C exits 0 after its checkpoint and evaluates nothing: the same command resumes it,
  finishes training, then evaluates.
  """
  config_flags.DEFINE_config_dict("config", get_config(), "Experiment config; override fields "
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
