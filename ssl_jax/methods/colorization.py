"""Colorization: "Colorful Image Colorization", Zhang, Isola, Efros, ECCV 2016
(arXiv:1603.08511).

Each view is converted to CIE Lab (sRGB, D65 white). The backbone sees only the
lightness L (as (L - 50) / 50, repeated over the dataset's channels so the backbone has
the shape of `config.model` on that dataset) and predicts the colour, as the paper does,
by classification over quantised ab bins: the ab plane cut into `bin_size` squares
centred on multiples of it, of which only the bins some sRGB colour falls in are kept
(261 at size 10; the paper's 313 count every bin the gamut touches).
Targets are soft: every pixel's ab spreads over its 5 nearest bin centres with a
Gaussian of std `soft_sigma` (the paper's 5 and 5), then pixels are averaged into the
cells of a `grid` x `grid` partition of the view; the loss is the cross-entropy of the
predicted per-cell distributions against those targets.

Where this differs from the paper, and why: the paper's network is fully convolutional
and predicts a distribution per pixel at 1/4 resolution; here, as for every method of
this framework, the backbone's pooled features are what is trained and evaluated, so an
MLP decoder from them predicts the coarse `grid` x `grid` cells. The paper's class
rebalancing (weights from the training set's empirical ab prior) is not implemented: it
needs a pass over the data before training.

Grey inputs (one channel, e.g. Fashion-MNIST) are accepted: their L is the grey value's
lightness and every target is the neutral bin, so they exercise the mechanics only.
Evaluation (`encode`) uses the backbone on the lightness of the evaluation image, the
input it was trained on, so this method's encode does not go through
`models.encode_images`; fine-tuning from exported weights feeds colour images.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, views as views_lib

# sRGB (linear) -> XYZ for the D65 white, and that white (IEC 61966-2-1).
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
AB_RANGE = 110.0  # |a|, |b| of every sRGB colour is below this
NEIGHBOURS = 5
SEARCH = 2  # grid points searched on each side of a pixel's nearest bin
# Recorded in exported sidecars (ssl_jax.export): what this backbone was trained on.
PRETRAINING_INPUT = "CIE Lab lightness of the image, (L - 50) / 50, repeated over the channels"


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bin_size = 10.0            # side of an ab bin (the paper: 10 -> 313 in-gamut bins)
  config.soft_sigma = 5.0           # std of the soft encoding over the 5 nearest bins
  config.grid = 4                   # the view's colour is predicted on grid x grid cells
  config.decoder_hidden_dim = 1024
  return validate.strict_update(config, overrides, "colorization")


def rgb_to_lab(rgb):
  """sRGB in [0, 1], [..., 3] -> CIE Lab [..., 3] (L in [0, 100]); numpy or jax arrays."""
  xp = jnp if isinstance(rgb, jax.Array) else np
  linear = xp.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
  xyz = linear @ RGB_TO_XYZ.T.astype(linear.dtype) / WHITE_D65.astype(linear.dtype)
  delta = 6 / 29
  f = xp.where(xyz > delta ** 3, xp.cbrt(xyz), xyz / (3 * delta ** 2) + 4 / 29)
  return xp.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                   200 * (f[..., 1] - f[..., 2])], axis=-1)


@functools.lru_cache(maxsize=None)
def ab_bins(bin_size: float) -> np.ndarray:
  """[Q, 2] centres (multiples of bin_size) of the ab bins that some sRGB colour falls in,
  found over a 64^3 grid of sRGB colours, in row-major (a, b) order."""
  levels = np.linspace(0, 1, 64)
  rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
  ab = rgb_to_lab(rgb)[:, 1:]
  index = np.round(ab / bin_size).astype(np.int64)
  side = int(np.ceil(AB_RANGE / bin_size))
  used = np.unique((index[:, 0] + side) * (2 * side + 1) + index[:, 1] + side)
  return np.stack([used // (2 * side + 1) - side, used % (2 * side + 1) - side], 1) * bin_size


def soft_encode(ab: jax.Array, centres: np.ndarray, sigma: float) -> jax.Array:
  """ab [..., 2] -> [..., Q]: Gaussian weights on the 5 nearest bin centres, summing to 1
  (a dense reference; `soft_encode_cells` is what training uses)."""
  squared = jnp.sum(jnp.square(ab[..., None, :] - jnp.asarray(centres, ab.dtype)), -1)
  nearest = -jax.lax.top_k(-squared, NEIGHBOURS)[0][..., -1:]  # 5th smallest distance
  weights = jnp.where(squared <= nearest, jnp.exp(-squared / (2 * sigma ** 2)), 0.0)
  return weights / jnp.sum(weights, -1, keepdims=True)


@functools.lru_cache(maxsize=None)
def _candidate_bins(bin_size: float) -> tuple[np.ndarray, int]:
  """([(2R+1)^2, 25] index of the bin centred on each of the 5x5 grid points around each
  grid point (i, j), |i|, |j| <= R, or -1 where no bin is centred; R).

  One row per possible nearest grid point, so each pixel gathers one row of 25 indices.
  Gathering the 25 indices one by one from a 2-D table was what bounded the step on a TPU:
  libtpu's cost analysis counted 438 GB accessed per chip for ResNet-50's batch of 16
  224x224 views (the whole step 472 GB), against 4 GB for these row gathers."""
  centres = ab_bins(bin_size)
  radius = int(np.ceil(AB_RANGE / bin_size))
  offset = radius + SEARCH
  lookup = -np.ones((2 * offset + 1, 2 * offset + 1), np.int32)
  grid = np.round(centres / bin_size).astype(np.int64) + offset
  lookup[grid[:, 0], grid[:, 1]] = np.arange(len(centres))
  near = np.arange(-radius, radius + 1) + offset
  rows, cols = (a.reshape(-1, 1) for a in np.meshgrid(near, near, indexing="ij"))
  steps = _search_offsets()
  return lookup[rows + steps[:, 0], cols + steps[:, 1]], radius


def _search_offsets() -> np.ndarray:
  """[25, 2] grid steps (di, dj), |di|, |dj| <= SEARCH, in row-major order."""
  steps = np.arange(-SEARCH, SEARCH + 1)
  return np.stack(np.meshgrid(steps, steps, indexing="ij"), -1).reshape(-1, 2).astype(np.int32)


def soft_encode_cells(ab: jax.Array, bin_size: float, sigma: float, grid: int) -> jax.Array:
  """ab [B, S, S, 2] -> [B, grid * grid, Q]: every pixel's soft encoding (its 5 nearest
  bins, Gaussian weights) averaged over the pixels of each cell of a grid x grid split.

  The 5 nearest are searched among the bins of the 5x5 grid points around the pixel's
  nearest one (25 candidates instead of all Q, and a scatter-add instead of a dense
  [B, S, S, Q] array): the same as `soft_encode` wherever 5 bins of the gamut lie within
  2.5 bins of the pixel; of the 262,144 colours of a 64^3 sRGB grid, 2 (at the gamut's
  edge) differ at bin size 10, of a 32^3 grid 1 (tests/methods/test_pretext.py)."""
  table, radius = _candidate_bins(float(bin_size))
  bins = len(ab_bins(bin_size))
  batch, size = ab.shape[0], ab.shape[1]
  cell = size // grid
  base = jnp.clip(jnp.round(ab / bin_size).astype(jnp.int32), -radius, radius)  # [B, S, S, 2]
  index = jnp.asarray(table)[(base[..., 0] + radius) * (2 * radius + 1) + base[..., 1] + radius]
  points = base[..., None, :] + _search_offsets()                        # [B, S, S, 25, 2]
  squared = jnp.sum(jnp.square(ab[..., None, :] - points * bin_size), -1)
  squared = jnp.where(index >= 0, squared, jnp.inf)
  chosen = jnp.zeros(squared.shape, bool)
  remaining = squared
  for _ in range(NEIGHBOURS):  # the 5 smallest, ties to the first, as top_k
    hit = jnp.arange(squared.shape[-1]) == jnp.argmin(remaining, -1)[..., None]
    chosen, remaining = chosen | hit, jnp.where(hit, jnp.inf, remaining)
  weights = jnp.where(chosen, jnp.exp(-squared / (2 * sigma ** 2)), 0.0)
  weights = weights / jnp.sum(weights, -1, keepdims=True) / (cell * cell)
  rows = jnp.arange(size) // cell
  cells = (rows[:, None] * grid + rows[None, :])[None, :, :, None]       # [1, S, S, 1]
  flat = (jnp.arange(batch)[:, None, None, None] * grid * grid + cells) * bins
  out = jnp.zeros((batch * grid * grid * bins,), jnp.float32)
  out = out.at[(flat + jnp.maximum(index, 0)).reshape(-1)].add(weights.reshape(-1))
  return out.reshape(batch, grid * grid, -1)


def lightness_input(lab: jax.Array, channels: int) -> jax.Array:
  """The backbone's input: (L - 50) / 50, repeated over `channels`."""
  return jnp.repeat((lab[..., :1] - 50.0) / 50.0, channels, axis=-1)


def _as_rgb(images01: jax.Array) -> jax.Array:
  return jnp.broadcast_to(images01, images01.shape[:-1] + (3,)) if images01.shape[-1] == 1 else images01


class ColorizationNet(nn.Module):
  backbone: nn.Module
  hidden_dim: int
  cells: int
  bins: int

  @nn.compact
  def __call__(self, images, train: bool):
    features = self.backbone(images, train=train)
    x = nn.relu(nn.Dense(self.hidden_dim, name="decoder_hidden")(features))
    logits = nn.Dense(self.cells * self.bins, name="decoder_out")(x)
    return logits.reshape(images.shape[0], self.cells, self.bins)


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.colorization or config.views (one
  group of count 1, no grey views, a crop size the grid divides)."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  settings = config.colorization
  validate.number("colorization.bin_size", settings.bin_size, low=1)
  validate.number("colorization.soft_sigma", settings.soft_sigma, low=1e-3)
  if not isinstance(settings.grid, int) or settings.grid < 1:
    raise errors.ConfigError(f"colorization.grid={settings.grid!r}; must be an integer >= 1")


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "colorization needs exactly one view group with count=1")
  (settings,) = config.views.values()
  if settings.grayscale_prob > 0:
    raise errors.ConfigError("colorization: views grayscale_prob must be 0 (a grey view "
                               "teaches that every colour is grey)")
  grid, size = config.colorization.grid, settings.crop_size
  if size % grid:
    raise errors.ConfigError(f"colorization.grid={grid} must divide the crop size {size}")


def network(config) -> ColorizationNet:
  _check_settings(config)
  settings = config.colorization
  return ColorizationNet(models.build(config.model), settings.decoder_hidden_dim,
                         settings.grid ** 2, len(ab_bins(settings.bin_size)))


def init(rng, config, example_batch) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> dict:
  del step
  _check_views(config)
  groups = views_lib.make(batch["image"], rng, config)
  grid = config.colorization.grid
  mean, std = (jnp.asarray(v, jnp.float32) for v in (config.data.mean, config.data.std))
  lab = rgb_to_lab(jnp.clip(_as_rgb(groups[0] * std + mean), 0.0, 1.0))
  targets = soft_encode_cells(lab[..., 1:], config.colorization.bin_size,
                              config.colorization.soft_sigma, grid)
  return {"lightness": lightness_input(lab, groups[0].shape[-1]), "targets": targets}


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step
  logits, updates = network(config).apply({"params": params, **method_state}, views["lightness"],
                                          train=train, mutable=["batch_stats"])
  targets = views["targets"]
  value = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), -1))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
  # Predicting every cell's batch-average distribution, whatever the input: the collapsed value.
  average = jnp.mean(targets, axis=0, keepdims=True)
  collapsed = -jnp.mean(jnp.sum(targets * jnp.log(average + 1e-12), -1))
  return value, ({"colour_bin_top1": accuracy, "collapsed_loss": collapsed},
                 {**method_state, **updates})


update = defaults.no_update
backbone = defaults.backbone


def encode(params, method_state, batch, config) -> jax.Array:
  """Backbone features of the evaluation image's lightness (what training showed it)."""
  images01 = augment.center_view(batch["image"], config.data.image_size)
  lightness = lightness_input(rgb_to_lab(_as_rgb(images01)), images01.shape[-1])
  return models.build(config.model).apply(backbone(params, method_state, config), lightness,
                                          train=False)
