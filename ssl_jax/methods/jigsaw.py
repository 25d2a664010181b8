"""Jigsaw puzzles: "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", Noroozi & Favaro, ECCV 2016 (arXiv:1603.09246).

Each view is cut into a 3x3 grid of cells; from each cell a tile a few pixels smaller is
taken at a random offset (the paper's gap, so that tiles cannot be matched by their
edges), normalised on its own (mean 0, std 1: no matching by brightness). The nine tiles
are shuffled by one of a fixed set of permutations, and the network names which: the
backbone runs on every tile (shared weights), their features are concatenated in the
shuffled order, and an MLP classifies the permutation.

The permutation set is the paper's Algorithm 1 made deterministic: starting from the
identity, repeatedly add the permutation whose smallest Hamming distance to those
already chosen is largest (the first such in lexicographic order), so every run and
every host builds the same set. Evaluation uses the backbone on whole images.
"""
import functools
import itertools
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.methods.lib import defaults, views as views_lib

GRID = 3
TILES = GRID * GRID


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.num_permutations = 100  # classes; the paper's best is 1000 (100 is its cheaper setting)
  config.tile_gap = 1            # a tile is (cell - gap) pixels, at a random offset in its cell
  config.hidden_dim = 1024       # the MLP on the nine concatenated tile features (paper: 4096)
  return validate.strict_update(config, overrides, "jigsaw")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.jigsaw or config.views (one group
  of count 1 whose crops leave tiles of at least one pixel)."""
  _check_num_permutations(config.jigsaw.num_permutations)
  validate.number("jigsaw.tile_gap", config.jigsaw.tile_gap, low=0, integer=True)
  _check_views(config)
  (settings,) = config.views.values()
  _check_tile(settings.crop_size, config.jigsaw.tile_gap)


def _check_num_permutations(count) -> None:
  if not isinstance(count, numbers.Integral) or not 1 <= count <= 1000:
    raise errors.ConfigError(f"jigsaw.num_permutations={count}; must be in [1, 1000]")


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "jigsaw needs exactly one view group with count=1")


def _check_tile(size: int, gap: int) -> None:
  """A view of `size` pixels cut into 3x3 cells leaves tiles of (cell - gap) >= 1 pixels."""
  cell = size // GRID
  if cell - gap < 1:
    raise errors.ConfigError(f"jigsaw.tile_gap={gap} leaves no tile in {cell}-pixel cells")


@functools.lru_cache(maxsize=None)
def permutations(count: int) -> np.ndarray:
  """[count, 9] permutations with maximal minimal Hamming distance, greedily, from the identity."""
  _check_num_permutations(count)
  every = np.array(list(itertools.permutations(range(TILES))), np.int8)  # lexicographic
  chosen = [0]
  nearest = (every != every[0]).sum(1)
  for _ in range(count - 1):
    pick = int(np.argmax(nearest))
    chosen.append(pick)
    nearest = np.minimum(nearest, (every != every[pick]).sum(1))
  return every[chosen].astype(np.int32)


def tiles(images: jax.Array, rng: jax.Array, gap: int) -> jax.Array:
  """[B, S, S, C] -> [B, 9, t, t, C] tiles in grid order (row-major), t = S // 3 - gap, each
  from a random offset inside its cell and normalised on its own."""
  batch, size, _, channels = images.shape
  _check_tile(size, gap)  # the views' size, which check_config knows as their crop_size
  cell = size // GRID
  tile = cell - gap
  offsets = jax.random.randint(rng, (batch, TILES, 2), 0, gap + 1)
  corners = jnp.array([(r * cell, c * cell) for r in range(GRID) for c in range(GRID)])

  def one(image, image_offsets):
    return jnp.stack([jax.lax.dynamic_slice(image, (corners[t, 0] + image_offsets[t, 0],
                                                    corners[t, 1] + image_offsets[t, 1], 0),
                                            (tile, tile, channels)) for t in range(TILES)])
  out = jax.vmap(one)(images, offsets)
  mean = out.mean(axis=(2, 3, 4), keepdims=True)
  std = out.std(axis=(2, 3, 4), keepdims=True)
  return (out - mean) / (std + 1e-5)


class JigsawNet(nn.Module):
  backbone: nn.Module
  hidden_dim: int
  num_permutations: int

  @nn.compact
  def __call__(self, shuffled, train: bool):
    batch = shuffled.shape[0]
    features = self.backbone(shuffled.reshape(batch * TILES, *shuffled.shape[2:]), train=train)
    x = nn.relu(nn.Dense(self.hidden_dim, name="hidden")(features.reshape(batch, -1)))
    return nn.Dense(self.num_permutations, name="classifier")(x)


def network(config) -> JigsawNet:
  _check_num_permutations(config.jigsaw.num_permutations)  # its classifier's width
  return JigsawNet(models.build(config.model), config.jigsaw.hidden_dim,
                   config.jigsaw.num_permutations)


def _tile_size(config) -> int:
  (settings,) = config.views.values()
  return settings.crop_size // GRID - config.jigsaw.tile_gap


def init(rng, config, example_batch) -> tuple[Any, Any]:
  size = _tile_size(config)
  channels = example_batch["image"].shape[-1]
  variables = network(config).init(rng, jnp.zeros((1, TILES, size, size, channels)), train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> dict:
  del step
  _check_views(config)
  crop_rng, tile_rng, order_rng = jax.random.split(rng, 3)
  (crops,) = views_lib.make(batch["image"], crop_rng, config)
  grid = tiles(crops, tile_rng, config.jigsaw.tile_gap)
  perms = jnp.asarray(permutations(config.jigsaw.num_permutations))
  labels = jax.random.randint(order_rng, (grid.shape[0],), 0, perms.shape[0])
  # Position j of the puzzle shows tile perms[label][j].
  shuffled = jnp.take_along_axis(grid, perms[labels][:, :, None, None, None], axis=1)
  return {"tiles": shuffled, "labels": labels}


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step
  logits, updates = network(config).apply({"params": params, **method_state}, views["tiles"],
                                          train=train, mutable=["batch_stats"])
  value = optax.softmax_cross_entropy_with_integer_labels(logits, views["labels"]).mean()
  chance = jnp.log(jnp.float32(config.jigsaw.num_permutations))
  return value, ({"jigsaw_top1": jnp.mean(jnp.argmax(logits, -1) == views["labels"]),
                  "collapsed_loss": chance}, {**method_state, **updates})


update = defaults.no_update
backbone = defaults.backbone
encode = defaults.encode_images_with(backbone)
