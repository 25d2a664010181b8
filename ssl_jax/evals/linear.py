"""Linear probe: a softmax classifier on frozen, standardised features, trained with optax.

Standardised: each feature minus its train-set mean, over its train-set std. For frozen
features that is what MAE's linear probe does with a BatchNorm without affine
parameters before the linear layer (He et al. 2022, appendix A.2): at evaluation that
BatchNorm applies exactly these statistics, and in training its batch statistics
estimate them. So every method's probe here is MAE's protocol in that respect.

Learning rate and weight decay are chosen on a held-out slice of the TRAIN split (never
on test): every grid point is trained at once (vmapped), the best by held-out top-1 is
retrained on the whole train split and scored once on test.
"""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssl_jax.core import errors, validate


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.epochs = 30                               # passes over the training features
  config.batch_size = 1024                         # minibatch of features
  config.learning_rates = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)  # Adam peak lrs (cosine)
  config.weight_decays = (0.0, 1e-5, 1e-4, 1e-3)   # L2 penalties searched
  config.holdout_fraction = 0.1                    # share of train held out for the search
  config.seed = 0                                  # split, init and minibatch order
  return validate.strict_update(config, overrides, "eval.linear")


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.eval.linear."""
  validate.number("eval.linear.epochs", config.epochs, low=1, integer=True)
  validate.number("eval.linear.batch_size", config.batch_size, low=1, integer=True)
  for name, low, low_open in (("learning_rates", 0, True), ("weight_decays", 0, False)):
    grid = config[name]
    if not isinstance(grid, (tuple, list)) or not grid:
      raise errors.ConfigError(f"eval.linear.{name}={grid!r}; must be a non-empty tuple of "
                               "numbers (the grid searched)")
    for value in grid:
      validate.number(f"eval.linear.{name}", value, low=low, low_open=low_open)
  validate.number("eval.linear.holdout_fraction", config.holdout_fraction, low=0, high=1,
                  low_open=True, high_open=True)
  validate.number("eval.linear.seed", config.seed, low=0, integer=True)


def protocol(config: ml_collections.ConfigDict) -> dict:
  return {"classifier": "softmax on standardised features, Adam + cosine",
          "epochs": config.epochs, "batch_size": config.batch_size,
          "learning_rates": list(config.learning_rates),
          "weight_decays": list(config.weight_decays),
          "selection": f"held-out {config.holdout_fraction:g} of train, then refit on all of train",
          "seed": config.seed}


def evaluate(train, test, *, num_classes: int, config: ml_collections.ConfigDict) -> dict:
  return linear_probe(*train, *test, num_classes=num_classes, config=config)


def standardize(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Zero mean, unit variance per feature, using statistics of `fit` only."""
  mean, std = fit.mean(0), fit.std(0)
  std = np.where(std < 1e-6, 1.0, std)  # constant features (e.g. blank border pixels)
  return [(x - mean) / std for x in (fit, *others)]


def _train(x, y, num_classes, learning_rates, weight_decays, epochs, batch_size, seed):
  """Trains one classifier per (learning_rate, weight_decay) pair; returns stacked (W, b)."""
  n, dim = x.shape
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  total_steps = epochs * steps_per_epoch
  key = jax.random.PRNGKey(seed)

  def train_one(learning_rate, weight_decay):
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, total_steps))
    params = {"w": jnp.zeros((dim, num_classes)), "b": jnp.zeros((num_classes,))}

    def loss_fn(params, xb, yb):
      logits = xb @ params["w"] + params["b"]
      penalty = 0.5 * weight_decay * jnp.sum(jnp.square(params["w"]))
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean() + penalty

    def epoch(carry, epoch_index):
      order = jax.random.permutation(jax.random.fold_in(key, epoch_index), n)
      batches = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

      def step(carry, index):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params, x[index], y[index])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

      return jax.lax.scan(step, carry, batches)[0], None

    (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jnp.arange(epochs))
    return params["w"], params["b"]

  return jax.vmap(train_one)(jnp.asarray(learning_rates, jnp.float32),
                             jnp.asarray(weight_decays, jnp.float32))


_train_jit = jax.jit(_train, static_argnames=("num_classes", "epochs", "batch_size", "seed"))


def _accuracies(w, b, x, y) -> np.ndarray:
  logits = jnp.einsum("nd,gdc->gnc", x, w) + b[:, None, :]
  return np.asarray(jnp.mean(jnp.argmax(logits, -1) == y[None], axis=-1))


def linear_probe(train_x, train_y, test_x, test_y, *, num_classes: int,
                 config: ml_collections.ConfigDict | None = None) -> dict:
  """Returns {"top1", "holdout_top1", "learning_rate", "weight_decay", "lr_at_grid_edge"}.

  `lr_at_grid_edge` is true when the chosen learning rate is the smallest or largest one
  searched (and there were several): the optimum may lie outside the grid.
  """
  config = config or default_config()
  check_config(config)
  train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
  train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
  order = np.random.default_rng(config.seed).permutation(len(train_x))
  holdout = order[:max(1, int(len(order) * config.holdout_fraction))]
  fit = order[len(holdout):]
  grid = list(itertools.product(config.learning_rates, config.weight_decays))
  learning_rates, weight_decays = zip(*grid)
  common = dict(num_classes=num_classes, epochs=config.epochs, batch_size=config.batch_size,
                seed=config.seed)

  fit_x, holdout_x = standardize(train_x[fit], train_x[holdout])
  w, b = _train_jit(jnp.asarray(fit_x), jnp.asarray(train_y[fit]), learning_rates=learning_rates,
                    weight_decays=weight_decays, **common)
  holdout_top1 = _accuracies(w, b, jnp.asarray(holdout_x), jnp.asarray(train_y[holdout]))
  best = int(np.argmax(holdout_top1))

  all_x, test_x = standardize(train_x, test_x)
  w, b = _train_jit(jnp.asarray(all_x), jnp.asarray(train_y), learning_rates=(learning_rates[best],),
                    weight_decays=(weight_decays[best],), **common)
  top1 = _accuracies(w, b, jnp.asarray(test_x), jnp.asarray(test_y))[0]
  searched = sorted(set(config.learning_rates))
  at_edge = len(searched) > 1 and learning_rates[best] in (searched[0], searched[-1])
  return {"top1": float(top1), "holdout_top1": float(holdout_top1[best]),
          "learning_rate": float(learning_rates[best]), "weight_decay": float(weight_decays[best]),
          "lr_at_grid_edge": bool(at_edge)}
