"""Optimizers and schedules, all from optax.

`make_optimizer(config.optimizer, ...)` returns the optax transformation and the
learning-rate schedule (the trainer logs it). Weight decay and, for LARS/LAMB, the
trust-ratio adaptation are masked off biases and normalisation parameters (every
parameter with fewer than two dimensions), as in SimCLR/BYOL.

Parameter groups: a method's optional `param_labels(params, config)` gives every
parameter one of LABELS, and each label is its own optax transformation
(`optax.multi_transform`). "default" trains normally; "no_decay" trains without weight
decay or trust-ratio adaptation (position embeddings, tokens); "constant_lr" trains at the
peak learning rate all run long, with no warm-up or decay (SimSiam's predictor); "frozen"
never changes and keeps no optimizer state.
"""
from typing import Any, Callable

import jax
import ml_collections
import optax

from ssl_jax.core.errors import ConfigError
from ssl_jax.core.validate import number, strict_update

OPTIMIZERS = ("sgd", "lars", "adamw", "lamb")
LABELS = ("default", "no_decay", "constant_lr", "frozen")
LR_SCALINGS = ("linear", "sqrt", "none")


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "lars"                # one of sgd | lars | adamw | lamb
  config.learning_rate = 0.3          # base lr, scaled by global_batch_size/256 per lr_scaling
  config.lr_scaling = "linear"        # linear: lr*B/256 (SimCLR); sqrt: lr*sqrt(B/256); none
  config.warmup_steps = 0             # linear warm-up from 0 to the peak lr
  config.end_learning_rate = 0.0      # value the cosine decay ends at
  config.weight_decay = 1e-6          # decoupled/L2 weight decay, masked off biases and norms
  config.momentum = 0.9               # sgd/lars momentum
  config.nesterov = False             # sgd/lars Nesterov momentum
  config.trust_coefficient = 0.001    # lars trust ratio coefficient (eta)
  config.b1 = 0.9                     # adamw/lamb first-moment decay
  config.b2 = 0.999                   # adamw/lamb second-moment decay
  config.eps = 1e-8                   # adamw/lamb epsilon
  config.grad_clip_norm = 0.0         # clip gradients to this global norm; 0 disables
  return strict_update(config, overrides, "optimizer")


def decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay: kernels, not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def checked_labels(params: Any, param_labels: Callable[[Any], Any]) -> Any:
  labels = param_labels(params)
  bad = sorted({label for label in jax.tree.leaves(labels) if label not in LABELS})
  if bad:
    raise ConfigError(f"param_labels gave {bad}; every label must be one of {LABELS}")
  return labels


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first optimizer field that holds numeric nonsense."""
  if config.name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={config.name!r}; expected one of {OPTIMIZERS}")
  if config.lr_scaling not in LR_SCALINGS:
    raise ConfigError(f"optimizer.lr_scaling={config.lr_scaling!r}; expected one of {LR_SCALINGS}")
  number("optimizer.learning_rate", config.learning_rate, low=0, low_open=True)
  number("optimizer.end_learning_rate", config.end_learning_rate, low=0)
  number("optimizer.warmup_steps", config.warmup_steps, low=0, integer=True)
  number("optimizer.weight_decay", config.weight_decay, low=0)
  number("optimizer.momentum", config.momentum, low=0, high=1, high_open=True)
  number("optimizer.trust_coefficient", config.trust_coefficient, low=0, low_open=True)
  number("optimizer.b1", config.b1, low=0, high=1, high_open=True)
  number("optimizer.b2", config.b2, low=0, high=1, high_open=True)
  number("optimizer.eps", config.eps, low=0, low_open=True)
  number("optimizer.grad_clip_norm", config.grad_clip_norm, low=0)


def peak_learning_rate(config: ml_collections.ConfigDict, global_batch_size: int) -> float:
  if config.lr_scaling not in LR_SCALINGS:
    raise ConfigError(f"optimizer.lr_scaling={config.lr_scaling!r}; expected one of {LR_SCALINGS}")
  ratio = global_batch_size / 256
  scale = {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[config.lr_scaling]
  return config.learning_rate * scale


def make_schedule(config: ml_collections.ConfigDict, total_steps: int,
                  global_batch_size: int) -> Callable[[Any], Any]:
  """Linear warm-up to the peak, then cosine decay to end_learning_rate at total_steps."""
  number("total_steps", total_steps, low=1, integer=True)
  if not 0 <= config.warmup_steps < total_steps:
    raise ConfigError(f"optimizer.warmup_steps={config.warmup_steps}; must be in [0, total_steps={total_steps})")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_learning_rate(config, global_batch_size),
      warmup_steps=config.warmup_steps, decay_steps=total_steps,
      end_value=config.end_learning_rate)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int, global_batch_size: int,
                   param_labels: Callable[[Any], Any] | None = None
                   ) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
  """Returns (optax transformation, learning-rate schedule).

  `param_labels(params)` (a method's, see the module docstring) assigns parameter groups.
  """
  check_config(config)
  schedule = make_schedule(config, total_steps, global_batch_size)
  if param_labels is None:
    tx = _base_optimizer(config, schedule, decay_mask)
  else:
    no_decay = lambda params: jax.tree.map(lambda p: False, params)
    peak = peak_learning_rate(config, global_batch_size)
    tx = optax.multi_transform(
        {"default": _base_optimizer(config, schedule, decay_mask),
         "no_decay": _base_optimizer(config, schedule, no_decay),
         "constant_lr": _base_optimizer(config, peak, decay_mask),
         "frozen": optax.set_to_zero()},
        lambda params: checked_labels(params, param_labels))
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx, schedule


def _base_optimizer(config, schedule, decay_mask) -> optax.GradientTransformation:
  if config.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov))
  elif config.name == "lars":
    tx = optax.lars(schedule, weight_decay=config.weight_decay, weight_decay_mask=decay_mask,
                    trust_coefficient=config.trust_coefficient, trust_ratio_mask=decay_mask,
                    momentum=config.momentum, nesterov=config.nesterov)
  elif config.name == "adamw":
    tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                     weight_decay=config.weight_decay, mask=decay_mask)
  else:
    tx = optax.lamb(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                    weight_decay=config.weight_decay, mask=decay_mask)
  return tx
