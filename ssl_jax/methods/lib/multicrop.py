"""Multi-crop, shared by the self-distillation methods (DINO, SimDINO).

Two view groups: `global_crops` (count 2 in the papers; the teacher sees only these) and
the optional `local_crops` (count N, a smaller crop size). Crops of different sizes are
separate arrays of the one jitted step, so the backbone runs once per group and the head
once on all their features together (the official MultiCropWrapper).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.methods.lib import teacher
from ssl_jax.methods.lib import views as views_lib

GLOBAL, LOCAL = "global_crops", "local_crops"


def crop_counts(config: ml_collections.ConfigDict, method: str) -> tuple[int, int]:
  """(global crops, local crops) per image, checked; Python ints, because the losses pair
  crops in Python."""
  names = list(config.views.keys())
  if GLOBAL not in names:
    raise errors.ConfigError(f"{method} needs a view group config.views.{GLOBAL} (count 2, the "
                               f"teacher's crops); got groups {names}")
  others = [n for n in names if n not in (GLOBAL, LOCAL)]
  if others:
    raise errors.ConfigError(f"{method} reads only the view groups {GLOBAL} and {LOCAL}; "
                               f"config.views also has {others}")
  num_global = config.views[GLOBAL].count
  num_local = config.views[LOCAL].count if LOCAL in names else 0
  validate.number(f"views.{GLOBAL}.count", num_global, low=1, integer=True)
  validate.number(f"views.{LOCAL}.count", num_local, low=0, integer=True)
  if num_global + num_local < 2:
    raise errors.ConfigError(f"{method} needs at least two crops per image; views.{GLOBAL}.count="
                               f"{num_global} with no {LOCAL} has one (the papers: 2 global crops)")
  return num_global, num_local


def _view_config(config: ml_collections.ConfigDict, num_local: int) -> ml_collections.ConfigDict:
  """The config views.make gets: without local_crops when its count is 0."""
  if LOCAL in config.views and num_local == 0:
    # views.make refuses a count of 0, so --config.views.local_crops.count=0 (no multi-crop)
    # drops the group here.
    return ml_collections.ConfigDict({"data": config.data,
                                      "views": {GLOBAL: config.views[GLOBAL]}})
  return config


def check_config(config: ml_collections.ConfigDict, method: str) -> None:
  """ConfigError for the first view group `make` cannot use: crop_counts' checks, then
  views.check_config of the groups it makes crops of."""
  _, num_local = crop_counts(config, method)
  views_lib.check_config(_view_config(config, num_local))


def make(images: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict, method: str
         ) -> tuple[jax.Array, jax.Array | None]:
  """(global crops [G*B, S, S, C], local crops [N*B, s, s, C] or None), view-major."""
  _, num_local = crop_counts(config, method)
  view_config = _view_config(config, num_local)
  groups = dict(zip(view_config.views.keys(), views_lib.make(images, rng, view_config)))
  return groups[GLOBAL], groups.get(LOCAL)


def crops_per_image(global_crops: jax.Array, local_crops: jax.Array | None, num_global: int) -> int:
  batch = global_crops.shape[0] // num_global
  return (global_crops.shape[0] + (0 if local_crops is None else local_crops.shape[0])) // batch


def student_backbone(params, method_state) -> dict:
  """The student's backbone variables of a MultiCropNetwork method (DINO, SimDINO)."""
  return models.variables(params["backbone"], method_state["batch_stats"].get("backbone"))


def encode(params, method_state, batch, config) -> dict:
  """Backbone features of the EMA teacher (primary: the official DINO evaluates and exports
  the teacher, `--checkpoint_key teacher`, which sees only global crops) and of the
  student."""
  return {"teacher": models.encode_images(teacher.ema_backbone(method_state, "teacher"),
                                          batch["image"], config),
          "student": models.encode_images(student_backbone(params, method_state),
                                          batch["image"], config)}


class MultiCropNetwork(nn.Module):
  """The backbone on each crop group in turn, then the head on all their features.

  Returns (per-group backbone features, the head's output). Its BatchNorm running
  statistics take the groups' updates in order (flax hands each call the previous call's
  new values), as PyTorch's BatchNorm does for the official per-resolution calls.
  """
  backbone: nn.Module
  head: nn.Module

  def __call__(self, crop_groups, train: bool = True, **head_kwargs):
    features = [self.backbone(crops, train=train) for crops in crop_groups]
    return features, self.head(jnp.concatenate(features), train=train, **head_kwargs)
