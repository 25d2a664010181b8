"""SimSiam: "Exploring Simple Siamese Representation Learning", Chen & He, CVPR 2021
(arXiv:2011.10566), Algorithm 1 and the official code (github.com/facebookresearch/simsiam).

One network (backbone + projector) gives z1, z2 of two views of every image (one view
group with count 2, the same augmentation for both); a predictor maps them to p1, p2. The
loss is the symmetrised negative cosine with a stop-gradient on the target branch,

    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,   D(p, z) = -cos(p, z)

with no negatives and no momentum encoder: the stop-gradient alone prevents collapse
(the paper's Figure 2). A collapsed network outputs one constant z, and so does a good one
at loss -1, so no `collapsed_loss` is reported; the paper's own collapse signal is the
per-dimension std of the l2-normalised z, logged as `embedding_std` (1/sqrt(d) when
spread, 0 when collapsed).

Projector: (Linear -> BN -> ReLU) x 2, Linear -> BN without affine (the official code;
its output linear's bias is frozen there, and the BN cancels it, so it has none here).
Predictor: Linear -> BN -> ReLU -> Linear, a 4x bottleneck (2048 -> 512 -> 2048).
`fix_predictor_lr` trains the predictor at the peak learning rate all run long (the
paper's Table 1 last row, 68.1%; the official --fix-pred-lr), through the optimizer's
"constant_lr" parameter group.

params: {"encoder": backbone + projector, "predictor": ...}
method_state: {"batch_stats": backbone + projector statistics}

The predictor exists only for the loss, so its BatchNorm always normalises with the
statistics of the batch and keeps no running averages (as in methods/moco.py): nothing
would read them, and the running mean of its first layer is identically 0 (it follows the
projector's affine-free output BN through a bias-free linear), a leaf of rounding noise.
"""
from typing import Any

import jax
import ml_collections

from ssl_jax import models
from ssl_jax.core import validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, diagnostics, forward, losses, views as views_lib
from ssl_jax.models.heads import BackboneWithHead, MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.projection_hidden_dims = (2048, 2048)  # projector hidden widths (paper: 2048, 2048)
  config.projection_dim = 2048                  # projector and predictor output (paper: 2048)
  config.predictor_hidden_dims = (512,)         # predictor bottleneck (paper: 512)
  config.fix_predictor_lr = True                # predictor at the peak lr, no schedule (paper: yes)
  config.per_view_forward = False               # each network once per view, BatchNorm per view (official)
  return validate.strict_update(config, overrides, "simsiam")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.simsiam or config.views."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  validate.number("simsiam.projection_dim", config.simsiam.projection_dim, low=1, integer=True)


def _check_views(config) -> None:
  views_lib.check_one_group(config, 2, "SimSiam needs exactly one view group with count=2 "
                            f"(config.views.pair), got groups {list(config.views.keys())}")


def _networks(config) -> tuple[BackboneWithHead, MLPHead]:
  _check_settings(config)
  simsiam = config.simsiam
  encoder = BackboneWithHead(
      backbone=models.build(config.model),
      head=MLPHead(tuple(simsiam.projection_hidden_dims), simsiam.projection_dim, last_bn=True))
  predictor = MLPHead(tuple(simsiam.predictor_hidden_dims), simsiam.projection_dim)
  return encoder, predictor


def init(rng, config, example_batch) -> tuple[Any, Any]:
  encoder, predictor = _networks(config)
  encoder_rng, predictor_rng = jax.random.split(rng)
  images = augment.evaluation_images(example_batch["image"][:1], config)
  encoder_vars = encoder.init(encoder_rng, images, train=False)
  _, projection = encoder.apply(encoder_vars, images, train=False)
  predictor_vars = predictor.init(predictor_rng, projection, train=False)
  params = {"encoder": encoder_vars["params"], "predictor": predictor_vars["params"]}
  return params, {"batch_stats": encoder_vars.get("batch_stats", {})}


def views(batch, rng, step, config) -> jax.Array:
  del step  # the same augmentation all run long
  _check_views(config)
  groups = views_lib.make(batch["image"], rng, config)
  return groups[0]  # [2B, S, S, C]: first views of all images, then second views


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step  # all randomness is in the views
  encoder, predictor = _networks(config)
  stats, per_view = method_state["batch_stats"], config.simsiam.per_view_forward
  projections, predictions, encoder_updates = forward.online_branch(
      encoder, predictor, params, stats, views, per_view, train)
  half = views.shape[0] // 2
  # View 1's prediction targets view 2's projection and the other way round; the target
  # is stop-gradiented inside negative_cosine.
  value = 0.5 * (losses.negative_cosine(predictions[:half], projections[half:]) +
                 losses.negative_cosine(predictions[half:], projections[:half]))
  new_state = {"batch_stats": encoder_updates["batch_stats"]}
  metrics = {"embedding_std": diagnostics.embedding_std(projections),
             "effective_rank": diagnostics.effective_rank(projections)}
  return value, (metrics, new_state)


update = defaults.no_update  # No target network: the stop-gradient is the whole trick.


def param_labels(params, config):
  predictor = "constant_lr" if config.simsiam.fix_predictor_lr else "default"
  return {"encoder": jax.tree.map(lambda _: "default", params["encoder"]),
          "predictor": jax.tree.map(lambda _: predictor, params["predictor"])}


def backbone(params, method_state, config) -> dict:
  del config
  return models.variables(params["encoder"]["backbone"],
                          method_state["batch_stats"].get("backbone"))


encode = defaults.encode_images_with(backbone)
