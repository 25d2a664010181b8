"""SimCLR: "A Simple Framework for Contrastive Learning of Visual Representations",
Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv:2002.05709).

Two augmented views of every image (one view group with count 2) go through backbone +
MLP projection head; the NT-Xent loss pulls the two views of an image together against
the other 2N-2 views of the GLOBAL batch (the similarity matrix is computed on global
arrays, so on 8 devices it is the same matrix as on 1). Evaluation uses the backbone
features, before the head.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, diagnostics, losses, views as views_lib
from ssl_jax.models.heads import BackboneWithHead, MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.temperature = 0.2                 # NT-Xent softmax temperature (0.5 in the paper's CIFAR runs)
  config.projection_hidden_dims = (2048,)  # hidden widths of the projection MLP
  config.projection_dim = 128              # output width of the projection MLP
  return validate.strict_update(config, overrides, "simclr")


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.simclr or config.views."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  validate.number("simclr.temperature", config.simclr.temperature, low=0, low_open=True)


def _check_views(config) -> None:
  views_lib.check_one_group(config, 2, "SimCLR needs exactly one view group with count=2")


def network(config: ml_collections.ConfigDict) -> BackboneWithHead:
  _check_settings(config)
  return BackboneWithHead(
      backbone=models.build(config.model),
      head=MLPHead(tuple(config.simclr.projection_hidden_dims), config.simclr.projection_dim))


def init(rng: jax.Array, config: ml_collections.ConfigDict, example_batch: dict) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch: dict, rng: jax.Array, step, config: ml_collections.ConfigDict) -> jax.Array:
  del step  # the same augmentation all run long
  _check_views(config)
  (pair,) = views_lib.make(batch["image"], rng, config)  # [2B, S, S, C], view-major
  return pair


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step  # SimCLR's randomness is all in the views.
  (_, projections), updates = network(config).apply(
      {"params": params, **method_state}, views, train=train, mutable=["batch_stats"])
  value, top1 = losses.nt_xent(projections, config.simclr.temperature)
  # ln(2N - 1): every anchor scores all other views alike (the trainer warns at it).
  collapsed = jnp.log(jnp.float32(projections.shape[0] - 1))
  metrics = {"contrastive_top1": top1, "collapsed_loss": collapsed,
             "embedding_std": diagnostics.embedding_std(projections),
             "effective_rank": diagnostics.effective_rank(projections)}
  return value, (metrics, {**method_state, **updates})


update = defaults.no_update  # No EMA target, queue or centre.
backbone = defaults.backbone
encode = defaults.encode_images_with(backbone)
