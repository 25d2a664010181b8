"""SimCLR: "A Simple Framework for Contrastive Learning of Visual Representations",
Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv:2002.05709).

Two augmented views of every image go through backbone + MLP projection head; the
NT-Xent loss pulls the two views of an image together against the other 2N-2 views of
the GLOBAL batch (the similarity matrix is computed on global arrays, so on 8 devices
it is the same matrix as on 1). Evaluation uses the backbone features, before the head.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses, models, validate
from ssl_jax.methods import common
from ssl_jax.models.heads import MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.temperature = 0.2                 # NT-Xent softmax temperature (0.5 in the paper's CIFAR runs)
  config.projection_hidden_dims = (2048,)  # hidden widths of the projection MLP
  config.projection_dim = 128              # output width of the projection MLP
  config.update(overrides)
  return config


class SimCLRNetwork(nn.Module):
  """Backbone followed by the projection head."""
  backbone: nn.Module
  head: nn.Module

  def __call__(self, images, train: bool = True):
    features = self.backbone(images, train=train)
    return features, self.head(features, train=train)

  def features(self, images):
    return self.backbone(images, train=False)


def network(config: ml_collections.ConfigDict) -> SimCLRNetwork:
  validate.number("simclr.temperature", config.simclr.temperature, low=0, low_open=True)
  return SimCLRNetwork(
      backbone=models.build(config.model),
      head=MLPHead(tuple(config.simclr.projection_hidden_dims), config.simclr.projection_dim))


def init(rng: jax.Array, config: ml_collections.ConfigDict, batch: dict) -> tuple[Any, Any]:
  images = common.evaluation_images(batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch: dict, rng: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  return common.two_views(batch["image"], rng, config)


def loss(params, extra, views, rng, config, train: bool = True):
  del rng  # SimCLR's randomness is all in the views.
  (_, projections), updates = network(config).apply(
      {"params": params, **extra}, views, train=train, mutable=["batch_stats"])
  value, top1 = losses.nt_xent(projections, config.simclr.temperature)
  return value, ({"contrastive_top1": top1}, {**extra, **updates})


def update(state, config):
  return state  # No EMA target, queue or centre.


def encode(params, extra, images, config) -> jax.Array:
  return network(config).apply({"params": params, **extra},
                               common.evaluation_images(images, config),
                               method=SimCLRNetwork.features)
