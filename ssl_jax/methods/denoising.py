"""Denoising autoencoder: "Extracting and Composing Robust Features with Denoising
Autoencoders", Vincent, Larochelle, Bengio, Manzagol, ICML 2008.

Each view is corrupted on device (additive Gaussian noise of std `noise_std`, then
salt-and-pepper: a `salt_pepper` fraction of the pixels set to the image's minimum or
maximum, half each), the backbone encodes the corrupted view, and a decoder maps its
pooled features back to the clean view's pixels (MSE over every pixel). The decoder is
an MLP from the pooled features to a `reconstruction_size` square image (the clean view
resized to it), so the pooled features themselves must carry the image. Evaluation uses
the backbone features of clean images.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, views as views_lib


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.noise_std = 0.5          # Gaussian noise, in units of the normalised pixels
  config.salt_pepper = 0.1        # fraction of pixels set to the image's min or max
  config.decoder_hidden_dim = 1024
  config.reconstruction_size = 28  # side of the reconstructed (target) image
  return validate.strict_update(config, overrides, "denoising")


def corrupt(images: jax.Array, rng: jax.Array, noise_std: float, salt_pepper: float) -> jax.Array:
  """Gaussian noise, then salt and pepper at the per-image min / max value."""
  noise_rng, where_rng, which_rng = jax.random.split(rng, 3)
  noisy = images + noise_std * jax.random.normal(noise_rng, images.shape)
  hit = jax.random.uniform(where_rng, images.shape[:3] + (1,)) < salt_pepper
  salt = jax.random.uniform(which_rng, images.shape[:3] + (1,)) < 0.5
  low = images.min(axis=(1, 2, 3), keepdims=True)
  high = images.max(axis=(1, 2, 3), keepdims=True)
  return jnp.where(hit, jnp.where(salt, high, low), noisy)


class DenoisingAutoencoder(nn.Module):
  backbone: nn.Module
  hidden_dim: int
  size: int
  channels: int

  @nn.compact
  def __call__(self, images, train: bool):
    features = self.backbone(images, train=train)
    x = nn.relu(nn.Dense(self.hidden_dim, name="decoder_hidden")(features))
    x = nn.Dense(self.size * self.size * self.channels, name="decoder_out")(x)
    return x.reshape(images.shape[0], self.size, self.size, self.channels)


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.denoising or config.views."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  settings = config.denoising
  validate.number("denoising.noise_std", settings.noise_std, low=0)
  validate.number("denoising.salt_pepper", settings.salt_pepper, low=0, high=1)


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "denoising needs exactly one view group with count=1")


def network(config) -> DenoisingAutoencoder:
  _check_settings(config)
  settings = config.denoising
  return DenoisingAutoencoder(models.build(config.model), settings.decoder_hidden_dim,
                              settings.reconstruction_size, len(config.data.mean))


def init(rng, config, example_batch) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> dict:
  del step
  _check_views(config)
  crop_rng, noise_rng = jax.random.split(rng)
  (clean,) = views_lib.make(batch["image"], crop_rng, config)
  size = config.denoising.reconstruction_size
  target = jax.image.resize(clean, (clean.shape[0], size, size, clean.shape[-1]), "linear")
  return {"corrupted": corrupt(clean, noise_rng, config.denoising.noise_std,
                               config.denoising.salt_pepper), "target": target}


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step
  reconstruction, updates = network(config).apply(
      {"params": params, **method_state}, views["corrupted"], train=train, mutable=["batch_stats"])
  value = jnp.mean(jnp.square(reconstruction - views["target"]))
  # Predicting every pixel's batch mean scores the targets' variance: the collapsed value.
  collapsed = jnp.mean(jnp.var(views["target"], axis=0))
  return value, ({"collapsed_loss": collapsed}, {**method_state, **updates})


update = defaults.no_update
backbone = defaults.backbone
encode = defaults.encode_images_with(backbone)
