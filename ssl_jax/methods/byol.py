"""BYOL: "Bootstrap Your Own Latent", Grill et al., NeurIPS 2020 (arXiv:2006.07733).

An online network (backbone, projector, predictor) predicts the projection a target
network (backbone, projector) gives of the other view; the target is an exponential
moving average of the online backbone and projector, never trained by gradient. The two
views are asymmetric (view groups `first` and `second`: blur 1.0 / 0.1, solarize
0.0 / 0.2 in the paper). The loss is the symmetrised normalised MSE, eq. (2) plus its
swapped twin. τ follows τ = 1 - (1 - τ_base)(cos(πk/K) + 1)/2 and is logged as
`ema_momentum`.

params: {"encoder": online backbone + projector, "predictor": ...}
method_state: {"batch_stats": online statistics, "target": {"params", "batch_stats"}}
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import diagnostics, forward, losses, teacher, views as views_lib
from ssl_jax.models.heads import BackboneWithHead, MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.projection_hidden_dims = (4096,)  # projector hidden widths (paper: 4096)
  config.projection_dim = 256              # projector output (paper: 256)
  config.predictor_hidden_dims = (4096,)   # predictor hidden widths (paper: 4096)
  config.base_momentum = 0.996             # τ_base of the target EMA (paper: 0.996)
  config.final_momentum = 1.0            # τ at the last step, reached on a cosine from base (papers: 1)
  config.per_view_forward = False        # each network once per view, BatchNorm per view (official)
  return validate.strict_update(config, overrides, "byol")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.byol or config.views."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  validate.number("byol.base_momentum", config.byol.base_momentum, low=0, high=1)
  validate.number("byol.final_momentum", config.byol.final_momentum, low=0, high=1)


def _check_views(config) -> None:
  views_lib.check_config(config)
  groups = list(config.views.values())
  if len(groups) != 2 or any(g.count != 1 for g in groups):
    raise errors.ConfigError("BYOL needs two view groups of count 1 (config.views.first, "
                               "config.views.second)")
  if groups[0].crop_size != groups[1].crop_size:
    raise errors.ConfigError("BYOL's two view groups share one forward pass, so they need "
                             f"the same crop_size, got {[g.crop_size for g in groups]}")


def _networks(config) -> tuple[BackboneWithHead, MLPHead]:
  _check_settings(config)
  byol = config.byol
  encoder = BackboneWithHead(backbone=models.build(config.model),
                             head=MLPHead(tuple(byol.projection_hidden_dims), byol.projection_dim))
  predictor = MLPHead(tuple(byol.predictor_hidden_dims), byol.projection_dim)
  return encoder, predictor


def init(rng, config, example_batch) -> tuple[Any, Any]:
  encoder, predictor = _networks(config)
  encoder_rng, predictor_rng = jax.random.split(rng)
  images = augment.evaluation_images(example_batch["image"][:1], config)
  encoder_vars = encoder.init(encoder_rng, images, train=False)
  _, projection = encoder.apply(encoder_vars, images, train=False)
  predictor_vars = predictor.init(predictor_rng, projection, train=False)
  params = {"encoder": encoder_vars["params"], "predictor": predictor_vars["params"]}
  batch_stats = {"encoder": encoder_vars.get("batch_stats", {}),
                 "predictor": predictor_vars.get("batch_stats", {})}
  # The target starts as an exact copy of the online encoder.
  target = {"params": encoder_vars["params"], "batch_stats": encoder_vars.get("batch_stats", {})}
  return params, {"batch_stats": batch_stats, "target": target}


def views(batch, rng, step, config):
  del step
  _check_views(config)
  groups = views_lib.make(batch["image"], rng, config)
  return jnp.concatenate(groups)  # [first views of all images; second views]


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step
  encoder, predictor = _networks(config)
  stats, per_view = method_state["batch_stats"], config.byol.per_view_forward
  (_, projections), encoder_updates = forward.apply(
      encoder, {"params": params["encoder"], "batch_stats": stats["encoder"]}, views, 2,
      per_view, train=train)
  predictions, predictor_updates = forward.apply(
      predictor, {"params": params["predictor"], "batch_stats": stats["predictor"]},
      projections, 2, per_view, train=train)
  target = method_state["target"]
  (_, target_projections), target_updates = forward.apply(
      encoder, {"params": target["params"], "batch_stats": target["batch_stats"]}, views, 2,
      per_view, train=train)
  half = views.shape[0] // 2
  # View 1's prediction targets view 2's target projection, and the other way round.
  value = (losses.byol_loss(predictions[:half], target_projections[half:]) +
           losses.byol_loss(predictions[half:], target_projections[:half]))
  new_state = {
      "batch_stats": {"encoder": encoder_updates["batch_stats"],
                      "predictor": predictor_updates["batch_stats"]},
      "target": {"params": target["params"], "batch_stats": target_updates["batch_stats"]}}
  metrics = {"embedding_std": diagnostics.embedding_std(projections),
             "effective_rank": diagnostics.effective_rank(projections)}
  return value, (metrics, new_state)


def momentum(step, config) -> jax.Array:
  """τ after optimizer step `step` (steps taken before it): base at 0, 1 at total_steps."""
  return teacher.cosine_momentum(step, config.total_steps, config.byol.base_momentum,
                                 config.byol.final_momentum)


def update(params, method_state, step, config):
  return teacher.follow(method_state, "target", params["encoder"], momentum(step, config))


def backbone(params, method_state, config) -> dict:
  """The online encoder's backbone (the paper evaluates the online network)."""
  del config
  return models.variables(params["encoder"]["backbone"],
                          method_state["batch_stats"]["encoder"].get("backbone"))


# Features of the online network (primary: the paper evaluates the online network) and of its
# EMA target.
encode = teacher.encode_online_and_target(backbone, "target")
