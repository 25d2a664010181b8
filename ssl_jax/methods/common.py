"""Image preprocessing the methods share: training views and evaluation inputs."""
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.data import augment


def evaluation_images(images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """uint8 [B,H,W,C] -> normalised float32 at the training resolution, no randomness."""
  images = augment.center_view(images, config.data.image_size)
  return augment.normalize(images, config.data.mean, config.data.std)


def two_views(images: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Two independently augmented, normalised views of every image, stacked as
  [view 1 of all images; view 2 of all images] -> [2B, S, S, C]."""
  first, second = jax.random.split(rng)
  views = jnp.concatenate([augment.random_views(images, first, config.augment),
                           augment.random_views(images, second, config.augment)])
  return augment.normalize(views, config.data.mean, config.data.std)
