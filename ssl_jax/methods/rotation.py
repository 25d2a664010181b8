"""RotNet: "Unsupervised Representation Learning by Predicting Image Rotations", Gidaris,
Singh, Komodakis, ICLR 2018 (arXiv:1803.07728).

Every image is shown at all four rotations (0, 90, 180, 270 degrees; the paper found
training on all four of each image at once best) and the network classifies which one
it sees: the backbone, then a linear 4-way classifier on its pooled features. The view
group (one of count 1) sets the crop and flip applied before rotating, so it must be
square. Evaluation uses the backbone features of the unrotated image.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, views as views_lib

ROTATIONS = 4


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.label_smoothing = 0.0  # of the 4-way targets (the paper: none)
  return validate.strict_update(config, overrides, "rotation")


class RotationNet(nn.Module):
  backbone: nn.Module

  @nn.compact
  def __call__(self, images, train: bool):
    return nn.Dense(ROTATIONS, name="classifier")(self.backbone(images, train=train))


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.rotation or config.views."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  validate.number("rotation.label_smoothing", config.rotation.label_smoothing, low=0, high=1,
                  high_open=True)


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "rotation needs exactly one view group with count=1")


def network(config) -> RotationNet:
  _check_settings(config)
  return RotationNet(models.build(config.model))


def rotate_all(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B, S, S, C] -> ([4B, S, S, C]: every image at 0, 90, 180, 270 degrees counter-
  clockwise, example-major: rows 4i..4i+3 are image i's turns), labels [4B] (0..3).

  Example-major keeps each device's images' turns on that device, so the views need no
  communication. The rotation-major order (all images at 0 degrees, then at 90, ...) made
  XLA all-gather each rotated copy, two of them in a transposed layout, and on 8 CPU
  devices the train step's gradient came out wrong: off by up to 6e-3 of a leaf's scale
  against a float64 reference that the 1-device gradient matched to 3e-6, with views and
  forward pass equal. A small convolution + BatchNorm with the same concatenation did
  not reproduce it."""
  rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(ROTATIONS)], axis=1)
  labels = jnp.tile(jnp.arange(ROTATIONS, dtype=jnp.int32), images.shape[0])
  return rotated.reshape(-1, *images.shape[1:]), labels


def init(rng, config, example_batch) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> dict:
  del step
  _check_views(config)
  groups = views_lib.make(batch["image"], rng, config)
  if groups[0].shape[1] != groups[0].shape[2]:  # views are square crops: a bug if not
    raise errors.ConfigError("rotation needs square views")
  images, labels = rotate_all(groups[0])
  return {"images": images, "labels": labels}


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step
  logits, updates = network(config).apply({"params": params, **method_state}, views["images"],
                                          train=train, mutable=["batch_stats"])
  targets = optax.smooth_labels(jax.nn.one_hot(views["labels"], ROTATIONS),
                                config.rotation.label_smoothing)
  value = optax.softmax_cross_entropy(logits, targets).mean()
  accuracy = jnp.mean(jnp.argmax(logits, -1) == views["labels"])
  # Chance: a network that cannot tell rotations apart scores ln 4 (the trainer warns at it).
  return value, ({"rotation_top1": accuracy, "collapsed_loss": jnp.log(jnp.float32(ROTATIONS))},
                 {**method_state, **updates})


update = defaults.no_update
backbone = defaults.backbone
encode = defaults.encode_images_with(backbone)
