"""MAE: "Masked Autoencoders Are Scalable Vision Learners", He, Chen, Xie, Li, Dollár,
Girshick, CVPR 2022 (arXiv:2111.06377).

Every image is cut into patches; per sample, a random `mask_ratio` of them (75%) is
hidden: the patches are ordered by uniform noise (argsort) and the first
int(N * (1 - mask_ratio)) kept, so every sample keeps exactly that many. The ViT
encoder (config.model, `ssl_jax.models.vit`) sees only the visible patches (plus its
class token); a lighter decoder gets the encoded visible tokens and one shared, learned
mask token in each hidden position, restored to grid order, with its own fixed sin-cos
position embeddings, and predicts every patch's pixels. The loss is the MSE over the
hidden patches only, against per-patch normalised pixels (`norm_pix_loss`: each
target patch minus its mean, over its unbiased std + 1e-6, as the official code).

Evaluation encodes the whole image, unmasked, pooled as config.model.pool (the class
token, as the paper's linear probe). The class and mask tokens get no weight decay
(`param_labels`; biases and norm parameters never do, see ssl_jax/training/optim.py); position
embeddings are fixed, not parameters.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, views as views_lib
from ssl_jax.models import vit


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mask_ratio = 0.75       # fraction of every image's patches hidden from the encoder
  config.decoder_width = 512     # the paper's decoder: 512-d, 8 blocks, 16 heads
  config.decoder_depth = 8
  config.decoder_heads = 16
  config.norm_pix_loss = True    # targets: per-patch normalised pixels (the paper's better choice)
  return validate.strict_update(config, overrides, "mae")


def random_masking(noise: jax.Array, keep: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """noise [B, N] -> (visible [B, keep] patch indices, restore [B, N], mask [B, N]).

  The `keep` patches with the smallest noise are visible; `restore[b, i]` is patch i's
  place in the shuffled order (argsort of the argsort), so taking the shuffled sequence
  at `restore` puts it back in grid order; `mask` is 1 where a patch is hidden.
  """
  order = jnp.argsort(noise, axis=1)
  restore = jnp.argsort(order, axis=1)
  return order[:, :keep], restore, (restore >= keep).astype(jnp.float32)


def kept_patches(num_patches: int, mask_ratio: float) -> int:
  return int(num_patches * (1 - mask_ratio))


class MaskedAutoencoder(nn.Module):
  """encoder: a ViT. Returns (predicted pixels [B, N, p*p*C], mask [B, N])."""
  encoder: vit.ViT
  decoder_width: int
  decoder_depth: int
  decoder_heads: int
  channels: int

  def setup(self):
    self.decoder_embed = nn.Dense(self.decoder_width, kernel_init=vit.xavier, name="decoder_embed")
    self.mask_token = self.param("mask_token", nn.initializers.normal(0.02),
                                 (1, 1, self.decoder_width))
    self.decoder = vit.Encoder(self.decoder_depth, self.decoder_heads, name="decoder")
    patch = self.encoder.patch_size
    self.decoder_pred = nn.Dense(patch * patch * self.channels, kernel_init=vit.xavier,
                                 name="decoder_pred")

  def __call__(self, images, noise, keep: int, train: bool):
    grid = self.encoder.grid(images)
    tokens = self.encoder.embed(images)  # [B, N, D]
    visible, restore, mask = random_masking(noise, keep)
    tokens = jnp.take_along_axis(tokens, visible[..., None], axis=1)
    hidden = self.encoder.transform(tokens, train)  # [B, 1 + keep, D]
    x = self.decoder_embed(hidden)
    batch, num_patches = noise.shape
    masked = jnp.broadcast_to(self.mask_token, (batch, num_patches - keep, self.decoder_width))
    shuffled = jnp.concatenate([x[:, 1:], masked.astype(x.dtype)], axis=1)
    patches = jnp.take_along_axis(shuffled, restore[..., None], axis=1)  # grid order
    positions = jnp.asarray(vit.sincos_2d(self.decoder_width, *grid), x.dtype)
    x = jnp.concatenate([x[:, :1], patches + positions], axis=1)
    return self.decoder_pred(self.decoder(x, train))[:, 1:], mask


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.mae or config.views, or a size
  that is not a whole number of the ViT's patches (decided here from the config; the ViT
  checks the arrays it gets too)."""
  _check_settings(config)
  if models.family(config.model.name) is not vit:
    raise _not_a_vit(config)
  mae = config.mae
  validate.number("mae.decoder_width", mae.decoder_width, low=1, integer=True)
  validate.number("mae.decoder_depth", mae.decoder_depth, low=0, integer=True)
  validate.number("mae.decoder_heads", mae.decoder_heads, low=1, integer=True)
  if mae.decoder_width % 4:
    raise errors.ConfigError(f"mae.decoder_width={mae.decoder_width} must be divisible by 4 "
                             "(the decoder's 2-D sin-cos position embedding)")
  if mae.decoder_width % mae.decoder_heads:
    raise errors.ConfigError(f"mae.decoder_width={mae.decoder_width} is not divisible by "
                             f"mae.decoder_heads={mae.decoder_heads}")
  _check_views(config)
  patch = config.model.get("patch_size", 16)
  if isinstance(patch, int) and patch >= 1:  # else models.check_config names it
    sizes = [("data.image_size", config.data.image_size)] + [
        (f"views.{name}.crop_size", group.crop_size) for name, group in config.views.items()]
    for field, size in sizes:
      if size % patch:
        raise errors.ConfigError(f"{field}={size} is not a whole number of "
                                 f"model.patch_size={patch}-pixel patches")
    for name, group in config.views.items():
      patches = (group.crop_size // patch) ** 2
      kept = kept_patches(patches, mae.mask_ratio)
      if not 1 <= kept < patches:
        raise errors.ConfigError(
            f"mae.mask_ratio={mae.mask_ratio} keeps {kept} of the {patches} patches of a "
            f"{group.crop_size}-pixel crop: the encoder needs at least one and the loss at "
            "least one hidden (the paper: 0.75)")


def _check_settings(config) -> None:
  validate.number("mae.mask_ratio", config.mae.mask_ratio, low=0, high=1, high_open=True)


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "MAE needs exactly one view group with count=1")


def _not_a_vit(config) -> errors.ConfigError:
  return errors.ConfigError(f"MAE needs a ViT encoder (config.model.name='vit'), got "
                            f"config.model.name={config.model.name!r}")


def network(config: ml_collections.ConfigDict) -> MaskedAutoencoder:
  _check_settings(config)
  encoder = models.build(config.model)
  if not isinstance(encoder, vit.ViT):
    raise _not_a_vit(config)
  return MaskedAutoencoder(encoder, config.mae.decoder_width, config.mae.decoder_depth,
                           config.mae.decoder_heads, len(config.data.mean))


def reconstruction_loss(predicted, images, mask, patch_size: int, norm_pix: bool):
  """Mean over hidden patches of the per-patch MSE between prediction and target."""
  target = vit.patchify(images, patch_size)
  if norm_pix:
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean(jnp.square(predicted.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(per_patch * mask) / jnp.sum(mask)


def init(rng: jax.Array, config: ml_collections.ConfigDict, example_batch: dict) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  num_patches = vit.patchify(images, config.model.patch_size).shape[1]
  noise = jnp.zeros((1, num_patches))
  variables = network(config).init(rng, images, noise, kept_patches(num_patches, config.mae.mask_ratio),
                                   train=False)
  return variables["params"], {}


# The loss is a mean over examples (every image has the same number of hidden patches),
# and views hold the examples on their leading axis: gradient accumulation is exact.
PER_EXAMPLE_LOSS = True


def views(batch: dict, rng: jax.Array, step, config: ml_collections.ConfigDict) -> dict:
  """One augmented crop of every image (config.views: one group of count 1) and the
  per-patch noise that chooses its mask."""
  del step
  _check_views(config)
  crop_key, noise_key = jax.random.split(rng)
  (images,) = views_lib.make(batch["image"], crop_key, config)
  num_patches = vit.patchify(images, config.model.patch_size).shape[1]
  return {"images": images, "noise": jax.random.uniform(noise_key, (images.shape[0], num_patches))}


# The backbone's stochastic depth (a ViT's drop_path_rate) draws from the step's rng.
DROP_PATH = True


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del step
  num_patches = views["noise"].shape[1]
  keep = kept_patches(num_patches, config.mae.mask_ratio)
  predicted, mask = network(config).apply({"params": params}, views["images"], views["noise"],
                                          keep, train=train, rngs={"dropout": rng})
  value = reconstruction_loss(predicted, views["images"], mask, config.model.patch_size,
                              config.mae.norm_pix_loss)
  metrics = {"visible_patches": jnp.float32(keep), "prediction_std": jnp.std(predicted)}
  return value, (metrics, method_state)


update = defaults.no_update


def backbone(params, method_state, config) -> dict:
  """The ViT encoder (the decoder is discarded after pretraining)."""
  del method_state, config
  return models.variables(params["encoder"])


encode = defaults.encode_images_with(backbone)


def param_labels(params, config):
  """No weight decay on the class and mask tokens (and, by the optimizer's own mask, on
  biases and norm parameters)."""
  del config
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "no_decay" if path[-1].key in ("class_token", "mask_token") else "default",
      params)
