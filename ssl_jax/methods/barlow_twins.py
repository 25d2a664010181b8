"""Barlow Twins: "Self-Supervised Learning via Redundancy Reduction", Zbontar, Jing, Misra,
LeCun, Deny, ICML 2021 (arXiv:2103.03230), eq. (1)-(2) and the official code
(github.com/facebookresearch/barlowtwins).

A backbone + projector embeds two views of every image; the cross-correlation matrix C of
the two embeddings, each dimension standardised over the batch, is pushed towards the
identity:

    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2        (losses.barlow_twins)

C is computed on the global arrays, so its batch is the GLOBAL batch on any number of
devices (the official code all-reduces the per-device sums). lambda is
`redundancy_weight`, used as given: the paper's 5.1e-3 was tuned at D = 8192, and we do
not rescale it with D (solo-learn keeps it at D = 2048 too); the off-diagonal sum has
D(D-1) terms against D on the diagonal, so at a smaller D the same lambda weighs
redundancy less. A collapsed projector (one constant output) standardises to zero, C = 0,
and the loss sits at D: `collapsed_loss`.

Views: one group of count 2 or two groups of count 1 (`first`/`second`, the paper's
asymmetric blur 1.0/0.1 and solarisation 0.0/0.2), of one crop size. Both views go
through the network in one forward, so BatchNorm statistics are over both views (the
official code runs the backbone once per view); the loss standardises each view apart.

params: backbone + projector.  method_state: {"batch_stats"}.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, diagnostics, forward, losses, views as views_lib
from ssl_jax.models.heads import BackboneWithHead, MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.projection_hidden_dims = (8192, 8192)  # projector hidden widths (paper: 8192, 8192)
  config.projection_dim = 8192                  # D, the projector output (paper: 8192)
  config.redundancy_weight = 5.1e-3             # lambda, off-diagonal weight (paper: 5.1e-3, D=8192)
  config.per_view_forward = False  # the network once per view, BatchNorm per view (official)
  return validate.strict_update(config, overrides, "barlow_twins")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.barlow_twins or config.views."""
  _check_settings(config)
  views_lib.check_two_views(config, "Barlow Twins")


def _check_settings(config) -> None:
  settings = config.barlow_twins
  validate.number("barlow_twins.redundancy_weight", settings.redundancy_weight, low=0)
  validate.number("barlow_twins.projection_dim", settings.projection_dim, low=1, integer=True)


def network(config) -> BackboneWithHead:
  _check_settings(config)
  settings = config.barlow_twins
  return BackboneWithHead(backbone=models.build(config.model),
                          head=MLPHead(tuple(settings.projection_hidden_dims),
                                       settings.projection_dim))


def init(rng, config, example_batch) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> jax.Array:
  del step  # the same augmentation all run long
  return views_lib.two_views(batch["image"], rng, config, "Barlow Twins")


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step  # all randomness is in the views
  (_, projections), updates = forward.apply(
      network(config), {"params": params, **method_state}, views, 2,
      config.barlow_twins.per_view_forward, train=train)
  half = views.shape[0] // 2
  value, correlation = losses.barlow_twins(projections[:half], projections[half:],
                                           config.barlow_twins.redundancy_weight)
  dim = correlation.shape[0]
  off_diagonal = jnp.sum(jnp.square(correlation)) - jnp.sum(jnp.square(jnp.diagonal(correlation)))
  metrics = {"on_diagonal_mean": jnp.mean(jnp.diagonal(correlation)),
             "off_diagonal_rms": jnp.sqrt(off_diagonal / (dim * (dim - 1))),
             "collapsed_loss": jnp.float32(dim),
             "embedding_std": diagnostics.embedding_std(projections),
             "effective_rank": diagnostics.effective_rank(projections)}
  return value, (metrics, {**method_state, **updates})


update = defaults.no_update  # No target network, queue or centre.
backbone = defaults.backbone
encode = defaults.encode_images_with(backbone)
