"""The method-contract functions most methods share, to assign rather than rewrite.

    update = defaults.no_update                     # no EMA target, queue or centre
    backbone = defaults.backbone                    # params["backbone"] (+ its BatchNorm stats)
    encode = defaults.encode_images_with(backbone)  # evaluation images through it

A method whose parts differ (BYOL's online encoder, DINO's teacher features, CLIP's dual
encoder) writes its own; see ssl_jax/methods/__init__.py for the contract.
"""
from collections.abc import Callable

from ssl_jax import models


def no_update(params, method_state, step, config):
  """`update` of a method that moves nothing after the optimizer step."""
  del params, step, config
  return method_state, {}


def backbone(params, method_state, config) -> dict:
  """`backbone` of a method that keeps its network under params["backbone"], with that
  network's BatchNorm statistics (if it has any) under method_state["batch_stats"]."""
  del config
  stats = method_state.get("batch_stats", {}).get("backbone")
  return models.variables(params["backbone"], stats)


def encode_images_with(backbone_fn: Callable) -> Callable:
  """`encode`: `backbone_fn`'s features of the evaluation images (models.encode_images)."""
  def encode(params, method_state, batch, config):
    return models.encode_images(backbone_fn(params, method_state, config), batch["image"], config)
  return encode


def encode_tokens_with(backbone_fn: Callable) -> Callable:
  """`encode`: `backbone_fn`'s pooled features of the token ids batch["tokens"]."""
  def encode(params, method_state, batch, config):
    return models.build(config.model).apply(backbone_fn(params, method_state, config),
                                            batch["tokens"], train=False)
  return encode
