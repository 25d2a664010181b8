"""MoCo v3: "An Empirical Study of Training Self-Supervised Vision Transformers", Chen, Xie,
He, ICCV 2021 (arXiv:2104.02057), Algorithm 1 (ResNet and ViT alike).

The online network (backbone, projector, predictor) gives queries q1, q2 of two
asymmetric views (view groups `first` and `second`, BYOL's augmentations); the momentum
encoder (backbone, projector), an EMA of the online backbone and projector that is never
trained by gradient, gives keys k1, k2. The loss is

    info_nce(q1, k2, T) + info_nce(q2, k1, T)

where the other keys of the GLOBAL batch are the negatives and each term is already
multiplied by 2T (Algorithm 1's `ctr`). The arrays are global under jit, so on 8 devices
this is the same matrix as on 1 (the official code all-gathers the keys).

`queue_size > 0` swaps the in-batch negatives for a MoCo v2 queue (arXiv:2003.04297):
query i is scored against its own key and the queue only, with no 2T factor; the same
network and symmetrised loss, so this is a v3 network with v2's negatives, not a
reproduction of MoCo v2 (no predictor there). The loss uses the queue as it was before
this step; the 2B keys of the whole global batch are then written into the ring buffer.

params: {"encoder": online backbone + projector, "predictor": ...}
method_state: {"batch_stats": online backbone + projector statistics,
               "target": {"params", "batch_stats"}}
  plus {"queue": [Q, D] l2-normalised keys, "queue_pointer": int32} when queue_size > 0.

The predictor exists only for the loss, so its BatchNorm always normalises with the
statistics of the batch and keeps no running averages: nothing would read them, and the
running mean of its first layer is identically 0 (it follows the projector's affine-free
output BN through a bias-free linear), a leaf of pure rounding noise.

Differences from the official code (facebookresearch/moco-v3), none of which change the
objective: both views go through each network in one forward, so BatchNorm statistics
are over both views of the global batch (the official ResNet uses SyncBN per view); the
momentum encoder moves after the optimizer step with τ(step) instead of before the next
forward with τ(step + 1), which gives it the same params one step of schedule earlier.
"""
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import diagnostics, forward, losses, teacher, views as views_lib
from ssl_jax.models.heads import BackboneWithHead, MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  """The heads the paper describes (a 3-layer projector and 2-layer predictor, 4096 wide,
  256 out, BN in every layer); the official ResNet-50 code's differences and T = 1.0 are
  what experiments/moco.py sets for ImageNet."""
  config = ml_collections.ConfigDict()
  config.temperature = 0.2                      # InfoNCE T (paper: 1.0 ResNet-50, 0.2 ViT)
  config.projection_hidden_dims = (4096, 4096)  # projector hidden widths (official ResNet code: (4096,))
  config.projection_dim = 256                   # projector and predictor output width (paper: 256)
  config.predictor_hidden_dims = (4096,)        # predictor hidden widths (paper: 2 layers, 4096)
  config.predictor_last_bn = True               # affine-free BN on its output (official ResNet code: none)
  config.base_momentum = 0.99                   # τ_base of the momentum encoder, cosine to 1 (paper: 0.99)
  config.final_momentum = 1.0            # τ at the last step, reached on a cosine from base (papers: 1)
  config.queue_size = 0                         # 0: v3's in-batch negatives; >0: a v2 queue (v2 paper: 65536)
  config.per_view_forward = False               # each network once per view, BatchNorm per view (official)
  return validate.strict_update(config, overrides, "moco")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.moco or config.views; a queue is
  checked against config.global_batch_size here (the loss checks it against the batch it
  gets)."""
  _check_settings(config)
  if "global_batch_size" in config:
    _check_queue(config.moco.queue_size, config.global_batch_size)
  _check_views(config)


def _check_settings(config) -> None:
  moco = config.moco
  validate.number("moco.temperature", moco.temperature, low=0, low_open=True)
  validate.number("moco.base_momentum", moco.base_momentum, low=0, high=1)
  validate.number("moco.final_momentum", config.moco.final_momentum, low=0, high=1)
  validate.number("moco.queue_size", moco.queue_size, low=0, integer=True)


def _check_queue(queue_size: int, batch_size: int) -> None:
  """A queue (queue_size > 0) must hold the 2 x batch_size keys of a step."""
  if 0 < queue_size < 2 * batch_size:
    raise errors.ConfigError(
        f"moco.queue_size={queue_size} is smaller than the 2 x {batch_size} keys of a step; "
        f"make it at least {2 * batch_size} (or 0 for MoCo v3's in-batch negatives)")


def _check_views(config) -> None:
  groups = list(config.views.values())
  if len(groups) != 2 or any(g.count != 1 for g in groups):
    raise errors.ConfigError("MoCo v3 needs two view groups of count 1 (config.views.first, "
                               f"config.views.second), got {list(config.views.keys())} with "
                               f"counts {[g.count for g in groups]}")
  if groups[0].crop_size != groups[1].crop_size:
    raise errors.ConfigError("MoCo v3's two view groups share one forward pass, so they need "
                               f"the same crop_size, got {[g.crop_size for g in groups]}")
  views_lib.check_config(config)


def _networks(config) -> tuple[BackboneWithHead, MLPHead]:
  _check_settings(config)
  moco = config.moco
  encoder = BackboneWithHead(backbone=models.build(config.model),
                             head=MLPHead(tuple(moco.projection_hidden_dims), moco.projection_dim,
                                           last_bn=True))
  predictor = MLPHead(tuple(moco.predictor_hidden_dims), moco.projection_dim,
                      last_bn=bool(moco.predictor_last_bn))
  return encoder, predictor


def init(rng, config, example_batch) -> tuple[Any, Any]:
  encoder, predictor = _networks(config)
  encoder_rng, predictor_rng, queue_rng = jax.random.split(rng, 3)
  images = augment.evaluation_images(example_batch["image"][:1], config)
  encoder_vars = encoder.init(encoder_rng, images, train=False)
  _, projection = encoder.apply(encoder_vars, images, train=False)
  predictor_vars = predictor.init(predictor_rng, projection, train=False)
  params = {"encoder": encoder_vars["params"], "predictor": predictor_vars["params"]}
  batch_stats = encoder_vars.get("batch_stats", {})
  # The momentum encoder starts as an exact copy of the online backbone and projector.
  state = {"batch_stats": batch_stats, "target": {"params": params["encoder"],
                                                  "batch_stats": batch_stats}}
  if config.moco.queue_size > 0:
    # Random unit vectors until real keys replace them, as in the MoCo code.
    noise = jax.random.normal(queue_rng, (config.moco.queue_size, config.moco.projection_dim),
                              jnp.float32)
    state["queue"] = losses.l2_normalize(noise)
    state["queue_pointer"] = jnp.zeros((), jnp.int32)
  return params, state


def views(batch, rng, step, config) -> tuple[jax.Array, jax.Array]:
  del step  # the same augmentation all run long
  _check_views(config)
  first, second = views_lib.make(batch["image"], rng, config)
  return first, second


def _contrastive(queries, keys, queue, temperature):
  """One direction of the symmetrised loss: (loss, top1)."""
  if queue is None:
    return losses.info_nce(queries, keys, temperature)
  return losses.info_nce(queries, keys, temperature, negatives=queue, scale_by_temperature=False)


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step  # all randomness is in the views
  encoder, predictor = _networks(config)
  first, second = views
  batch_size = first.shape[0]
  images = jnp.concatenate([first, second])
  stats, per_view = method_state["batch_stats"], config.moco.per_view_forward
  projections, queries, encoder_updates = forward.online_branch(encoder, predictor, params, stats,
                                                                images, per_view, train)
  target = method_state["target"]
  (_, keys), target_updates = forward.apply(
      encoder, {"params": target["params"], "batch_stats": target["batch_stats"]}, images, 2,
      per_view, train=train)
  keys = jax.lax.stop_gradient(keys)
  q1, q2 = queries[:batch_size], queries[batch_size:]
  k1, k2 = keys[:batch_size], keys[batch_size:]

  queue = method_state.get("queue")
  if queue is not None:  # the batch it gets, which check_config cannot see
    _check_queue(queue.shape[0], batch_size)
  # Query of view 1 against the key of view 2, and the other way round.
  loss_12, top1_12 = _contrastive(q1, k2, queue, config.moco.temperature)
  loss_21, top1_21 = _contrastive(q2, k1, queue, config.moco.temperature)

  new_state = {
      "batch_stats": encoder_updates.get("batch_stats", stats),
      "target": {"params": target["params"],
                 "batch_stats": target_updates.get("batch_stats", target["batch_stats"])}}
  if queue is not None:
    # After the loss, which used the old queue: the keys of the whole global batch.
    new_state["queue"], new_state["queue_pointer"] = teacher.enqueue(
        queue, method_state["queue_pointer"], losses.l2_normalize(keys.astype(jnp.float32)))
  # The loss when every query scores every candidate alike (the trainer warns at it).
  candidates = batch_size if queue is None else queue.shape[0] + 1
  scale = 2 * config.moco.temperature if queue is None else 1.0
  metrics = {"contrastive_top1": (top1_12 + top1_21) / 2,
             "collapsed_loss": jnp.float32(2 * scale * math.log(candidates)),
             "embedding_std": diagnostics.embedding_std(projections),
             "effective_rank": diagnostics.effective_rank(projections)}
  return loss_12 + loss_21, (metrics, new_state)


def momentum(step, config) -> jax.Array:
  """τ after optimizer step `step` (steps taken before it): base at 0, 1 at total_steps."""
  return teacher.cosine_momentum(step, config.total_steps, config.moco.base_momentum,
                                 config.moco.final_momentum)


def update(params, method_state, step, config):
  return teacher.follow(method_state, "target", params["encoder"], momentum(step, config))


def backbone(params, method_state, config) -> dict:
  del config
  return models.variables(params["encoder"]["backbone"],
                          method_state["batch_stats"].get("backbone"))


# Features of the online network (primary: MoCo v3 evaluates the base (online) encoder) and of its
# EMA target.
encode = teacher.encode_online_and_target(backbone, "target")
