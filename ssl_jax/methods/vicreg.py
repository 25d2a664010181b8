"""VICReg: "Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
Bardes, Ponce, LeCun, ICLR 2022 (arXiv:2105.04906), eq. (1)-(6).

A backbone + expander (the paper's name for the projector) embeds two views of every
image as Z, Z'; the loss is

    lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]      (losses.vicreg)

invariance s (the MSE between the two views), variance v (a hinge keeping every
dimension's std over the batch above gamma = 1, eps = 1e-4) and covariance c (the squared
off-diagonal covariances, / d), with the paper's lambda = mu = 25, nu = 1. The
statistics are over the GLOBAL batch (global arrays under jit; the official code
all-gathers the embeddings). The official code halves the variance term, which is
`variance_weight=12.5` here. A collapsed expander (one constant output) has s = c = 0 and
v = 2 (gamma - sqrt(eps)): `collapsed_loss`, 49.5 at the paper's weights.

Views: one group of count 2 or two of count 1 of one crop size (the paper uses BYOL's
asymmetric augmentations), through one forward pass.

params: backbone + expander.  method_state: {"batch_stats"}.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, diagnostics, forward, losses, views as views_lib
from ssl_jax.models.heads import BackboneWithHead, MLPHead


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.projection_hidden_dims = (8192, 8192)  # expander hidden widths (paper: 8192, 8192)
  config.projection_dim = 8192                  # expander output d (paper: 8192)
  config.invariance_weight = 25.0               # lambda (paper: 25)
  config.variance_weight = 25.0                 # mu (paper: 25; the official code's halving = 12.5)
  config.covariance_weight = 1.0                # nu (paper: 1)
  config.std_target = 1.0                       # gamma of the variance hinge (paper: 1)
  config.eps = 1e-4                             # inside the variance's square root (paper: 1e-4)
  config.per_view_forward = False  # the network once per view, BatchNorm per view (official)
  return validate.strict_update(config, overrides, "vicreg")


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.vicreg or config.views."""
  _check_settings(config)
  views_lib.check_two_views(config, "VICReg")


def _check_settings(config) -> None:
  settings = config.vicreg
  for name in ("invariance_weight", "variance_weight", "covariance_weight", "std_target"):
    validate.number(f"vicreg.{name}", settings[name], low=0)
  validate.number("vicreg.eps", settings.eps, low=0, low_open=True)


def network(config) -> BackboneWithHead:
  _check_settings(config)
  settings = config.vicreg
  return BackboneWithHead(backbone=models.build(config.model),
                          head=MLPHead(tuple(settings.projection_hidden_dims),
                                       settings.projection_dim))


def init(rng, config, example_batch) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> jax.Array:
  del step  # the same augmentation all run long
  return views_lib.two_views(batch["image"], rng, config, "VICReg")


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del rng, step  # all randomness is in the views
  settings = config.vicreg
  (_, embeddings), updates = forward.apply(
      network(config), {"params": params, **method_state}, views, 2,
      config.vicreg.per_view_forward, train=train)
  half = views.shape[0] // 2
  value, terms = losses.vicreg(embeddings[:half], embeddings[half:],
                               settings.invariance_weight, settings.variance_weight,
                               settings.covariance_weight, settings.std_target, settings.eps)
  collapsed = 2 * settings.variance_weight * max(settings.std_target - settings.eps ** 0.5, 0.0)
  metrics = {**terms,
             "collapsed_loss": jnp.float32(collapsed),
             "embedding_std": diagnostics.embedding_std(embeddings),
             "effective_rank": diagnostics.effective_rank(embeddings)}
  return value, (metrics, {**method_state, **updates})


update = defaults.no_update  # No target network, queue or centre.
backbone = defaults.backbone
encode = defaults.encode_images_with(backbone)
