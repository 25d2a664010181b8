"""The pretraining objective on held-out data: the method's own loss and metrics on the
test split (a language model's MLM accuracy or perplexity, MAE's reconstruction error).

This evaluator reads the whole trained state, not features or a backbone (INPUT =
"state"): `evaluate_state` runs `method.views` and `method.loss(train=False)` on
every full batch of `config.eval.test_split` with fixed keys (batch i draws from
fold_in(PRNGKey(seed), i): the same masks for every checkpoint and for the random-init
baseline), and reports the mean over batches of each metric, next to the same network
with random weights. A last partial batch is left out (the loss is a mean over a whole
batch); perplexity is also reported as exp(mean loss) where the method has one.
"""
import jax
import ml_collections
import numpy as np

from ssl_jax.core import errors, parallel, validate
from ssl_jax.data import pipeline, sequences

INPUT = "state"
SCORE = "loss"  # the headline number of eval/objective.json
FEATURES = "the method's views and loss (train=False) on eval.test_split"
BASELINES = {"random_init": "same network, random weights (eval.random_init_seed)"}


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.batch_size = 64        # global batch of the held-out passes
  config.seed = 0               # keys of the held-out views (masks)
  return validate.strict_update(config, overrides, "eval.objective")


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.eval.objective (the batch is also
  checked against the devices and the test split's size when they are known)."""
  validate.number("eval.objective.batch_size", config.batch_size, low=1, integer=True)


def protocol(config: ml_collections.ConfigDict) -> dict:
  return {"measure": "the method's loss and metrics (train=False) on every full test batch, "
                     "mean over batches; fixed view keys", **config.to_dict()}


def evaluate_state(states: dict, *, method, run_config, mesh, config, log=print) -> dict:
  """{name: {"loss", <metrics>...}} for each (params, method_state) in `states`."""
  check_config(config)
  parallel.check_global_batch_size(config.batch_size, mesh)
  data = run_config.data
  # The held-out objective reads the test split as training reads its own (packed texts,
  # sentence pairs: ssl_jax/data/sequences.py).
  source, keys, host_preprocess = sequences.training_source(data, run_config.eval.test_split,
                                                            run_config.seed)
  if len(source) < config.batch_size:
    raise errors.ConfigError(f"eval.objective.batch_size={config.batch_size} exceeds the "
                               f"{len(source)} records of {run_config.eval.test_split!r}")

  @jax.jit
  def measure(params, method_state, batch, rng):
    step = jax.numpy.zeros((), jax.numpy.int32)
    view_rng, loss_rng = jax.random.split(rng)
    views = method.views(batch, view_rng, step, run_config)
    value, (metrics, _) = method.loss(params, method_state, views, loss_rng, step, run_config,
                                      train=False)
    return {"loss": value, **metrics}

  results = {}
  for name, (params, method_state) in states.items():
    sums, count = {}, 0
    batches = pipeline.eval_batches(source, batch_size=config.batch_size // jax.process_count(),
                                    keys=keys, preprocess=host_preprocess)
    for i, batch in enumerate(batches):
      mask = parallel.to_host(parallel.to_global(batch.pop("mask"), mesh))
      if not mask.all():
        continue
      out = parallel.to_host(measure(params, method_state, parallel.to_global(batch, mesh),
                                     jax.random.fold_in(jax.random.PRNGKey(config.seed), i)))
      for key, value in out.items():
        sums[key] = sums.get(key, 0.0) + float(value)
      count += 1
    means = {key: value / count for key, value in sums.items()}
    if "perplexity" in means:
      means["perplexity_of_mean_loss"] = float(np.exp(means["loss"]))
    means["batches"], means["records"] = count, count * config.batch_size
    log(f"  objective on {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()
                                               if isinstance(v, float)))
    results[name] = means
  return results
