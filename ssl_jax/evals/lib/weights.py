"""A pretraining run's trained weights for evaluation: params and method_state from its
checkpoint (no optimizer state), next to the same network's random initialisation, and
the random-init baseline's backbone that every method with the same backbone shares."""
import jax

from ssl_jax import methods, models
from ssl_jax.core import parallel
from ssl_jax.core.errors import NonFiniteFeaturesError
from ssl_jax.evals.lib.extraction import count_nonfinite
from ssl_jax.training import checkpoint, engine


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
  bad = count_nonfinite((fields["params"], fields["method_state"]))
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


def shares_random_backbone(method, config) -> bool:
  """Whether the method's features are its config.model backbone's on the plain image,
  frame or token input, so that its random-init baseline is the shared `random_backbone`:
  every method here but one whose pretext changes the input (PRETRAINING_INPUT:
  colorization's lightness); a method from outside with no config.model keeps its own
  random init."""
  return ("model" in config and config.data.modality in ("image", "video", "text")
          and callable(getattr(method, "backbone", None))
          and not hasattr(method, "PRETRAINING_INPUT"))


def random_backbone(config, mesh) -> dict:
  """The random-init baseline's backbone variables, replicated on `mesh`: initialised
  from config.eval.random_init_seed alone (models.random_variables), so every method with
  the same config.model and data is scored against the same random weights."""
  variables = models.random_variables(config, engine.example_batch(config),
                                      config.eval.random_init_seed)
  return parallel.replicate(variables, mesh)
