"""Frame-order prediction: the Order Prediction Network of "Unsupervised Representation
Learning by Sorting Sequences", Lee, Huang, Singh & Yang, ICCV 2017 (arXiv:1708.01246).

From each video, `tuple_length` frames are taken in time order (a random sorted subset of
its frames) and shown shuffled; the network names the shuffle. A sequence and its
reverse are one class, as in the paper (many motions look alike played backwards; an
item bouncing at constant speed looks exactly alike), so n frames give n!/2 classes (4
frames: 12). The class's representative is the permutation whose first entry is smaller
than its last (lexicographic order of those); the other direction is drawn with
probability 1/2.

The network is the paper's: the shared backbone encodes every frame (the frame encoder
the probes evaluate), each pair of frames (i < j in shown order) goes through one shared
layer on their concatenated features (the paper's pairwise fc7), and a linear layer on
all the pairs' outputs names the class.

Augmentation: one random view (crop, flip, colour jitter; one view group of count 1) per
tuple, the same for all of its frames. The paper jitters each frame's crop on its own, to
hide low-level cues on natural video; on data whose only motion is the item's position,
an independent crop per frame would change the very positions the order is read from,
so the tuple shares it (a shared crop cannot reveal the order). Evaluation encodes every
frame of a video and averages (models.encode_videos).
"""
import functools
import itertools
import math
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
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, views as views_lib


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.tuple_length = 4  # frames per tuple: 4!/2 = 12 classes (the paper's setting)
  config.pair_dim = 512    # the shared layer on each pair of frame features (paper: 512)
  return validate.strict_update(config, overrides, "frame_order")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.frame_order, of the data (videos
  with at least tuple_length frames) or of config.views (one group of count 1)."""
  if config.data.get("modality") != "video":
    raise errors.ConfigError(f"frame_order reads videos; data.modality="
                             f"{config.data.get('modality')!r} (use a video dataset, e.g. "
                             "--dataset moving_fashion_mnist)")
  _check_tuple_length(config.frame_order.tuple_length)
  if config.frame_order.tuple_length > config.data.frames:
    raise errors.ConfigError(f"frame_order.tuple_length={config.frame_order.tuple_length} "
                             f"exceeds the {config.data.frames} frames of a video (data.frames)")
  validate.number("frame_order.pair_dim", config.frame_order.pair_dim, low=1, integer=True)
  _check_views(config)


def _check_tuple_length(length) -> None:
  if not isinstance(length, numbers.Integral) or not 3 <= length <= 6:
    raise errors.ConfigError(f"frame_order.tuple_length={length}; must be in [3, 6] "
                             "(n!/2 classes: 3, 12, 60 or 360)")


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "frame_order needs exactly one view group with count=1 "
                                       "(one shared view of every tuple)")


@functools.lru_cache(maxsize=None)
def orders(length: int) -> np.ndarray:
  """int32 [length!/2, length]: one permutation of each {sequence, reverse} class, the one
  whose first entry is smaller than its last, in lexicographic order."""
  _check_tuple_length(length)
  every = itertools.permutations(range(length))
  return np.array([p for p in every if p[0] < p[-1]], np.int32)


def num_classes(length: int) -> int:
  return math.factorial(length) // 2


def shuffled_frames(videos: jax.Array, rng: jax.Array, length: int):
  """(frames [B, length, ...], labels [B], shown [B, length]): `length` frames of each video
  in time order (a uniformly random subset), shown in the order of a random class and
  direction; shown[b, j] is the time index of the frame at position j."""
  batch, total = videos.shape[:2]
  pick_rng, class_rng, direction_rng = jax.random.split(rng, 3)
  # A uniformly random subset of `length` of the `total` frames, in time order.
  chosen = jnp.sort(jnp.argsort(jax.random.uniform(pick_rng, (batch, total)), axis=1)[:, :length],
                    axis=1)
  labels = jax.random.randint(class_rng, (batch,), 0, num_classes(length))
  order = jnp.asarray(orders(length))[labels]
  backwards = jax.random.bernoulli(direction_rng, 0.5, (batch,))
  order = jnp.where(backwards[:, None], order[:, ::-1], order)
  shown = jnp.take_along_axis(chosen, order, axis=1)
  frames = jnp.take_along_axis(videos, shown.reshape(batch, length, *([1] * (videos.ndim - 2))),
                               axis=1)
  return frames, labels, shown


def shared_views(frames: jax.Array, rng: jax.Array, settings) -> jax.Array:
  """float32 [B, T, S, S, C] in [0, 1]: one random view per example (augment.random_view
  with that example's key) applied alike to each of its T frames."""
  keys = jax.random.split(rng, frames.shape[0])
  return jax.vmap(lambda clip, key: jax.vmap(
      lambda frame: augment.random_view(frame, key, settings))(clip))(frames, keys)


class OrderNet(nn.Module):
  backbone: nn.Module
  pair_dim: int
  num_classes: int

  @nn.compact
  def __call__(self, frames, train: bool):
    batch, length = frames.shape[:2]
    features = self.backbone(frames.reshape(batch * length, *frames.shape[2:]), train=train)
    features = features.reshape(batch, length, -1)
    pair_layer = nn.Dense(self.pair_dim, name="pair")
    pairs = [nn.relu(pair_layer(jnp.concatenate([features[:, i], features[:, j]], axis=-1)))
             for i, j in itertools.combinations(range(length), 2)]
    return nn.Dense(self.num_classes, name="classifier")(jnp.concatenate(pairs, axis=-1))


def network(config) -> OrderNet:
  _check_tuple_length(config.frame_order.tuple_length)  # its classifier's width
  return OrderNet(models.build(config.model), config.frame_order.pair_dim,
                  num_classes(config.frame_order.tuple_length))


def init(rng, config, example_batch) -> tuple[Any, Any]:
  (settings,) = config.views.values()
  size, channels = settings.crop_size, example_batch["video"].shape[-1]
  frames = jnp.zeros((1, config.frame_order.tuple_length, size, size, channels))
  variables = network(config).init(rng, frames, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> dict:
  del step
  _check_views(config)
  order_rng, view_rng = jax.random.split(rng)
  frames, labels, _ = shuffled_frames(batch["video"], order_rng, config.frame_order.tuple_length)
  (settings,) = config.views.values()
  frames = augment.normalize(shared_views(frames, view_rng, settings), config.data.mean,
                             config.data.std)
  return {"frames": frames, "labels": labels}


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step
  logits, updates = network(config).apply({"params": params, **method_state}, views["frames"],
                                          train=train, mutable=["batch_stats"])
  value = optax.softmax_cross_entropy_with_integer_labels(logits, views["labels"]).mean()
  chance = jnp.log(jnp.float32(num_classes(config.frame_order.tuple_length)))
  return value, ({"frame_order_top1": jnp.mean(jnp.argmax(logits, -1) == views["labels"]),
                  "collapsed_loss": chance}, {**method_state, **updates})


update = defaults.no_update
backbone = defaults.backbone


def encode(params, method_state, batch, config):
  """The frame encoder's features of every frame of each video, averaged."""
  return models.encode_videos(backbone(params, method_state, config), batch["video"], config)
