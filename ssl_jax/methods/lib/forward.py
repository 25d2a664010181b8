"""One network over a batch of views: one forward for all of them, or one per view.

The two-view methods here stack their views ([view 1 of every image; view 2 of every
image]) and run a network once, so its BatchNorm layers normalise with statistics over
both views together. The official code of BYOL (DeepMind's), SimSiam, MoCo v3, Barlow
Twins and VICReg calls each network once per view instead: every view is normalised by
its own batch statistics, and the running averages are updated once per view, in order.
`per_view=True` computes that. For a network without BatchNorm the two are the same
function; with it they differ, which is why the choice is a config field
(`per_view_forward` in those methods' sections).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def apply(module: nn.Module, variables: dict, views: jax.Array, num_views: int,
          per_view: bool, **kwargs) -> tuple[Any, dict]:
  """`module.apply(variables, views, mutable=["batch_stats"], **kwargs)`, or the same over
  each of the `num_views` equal blocks of `views` in turn, each block seeing the batch
  statistics the previous one left. Returns (the outputs concatenated along the batch in
  view order, {"batch_stats": the final statistics}), as one apply would."""
  if not per_view or num_views == 1:
    return module.apply(variables, views, mutable=["batch_stats"], **kwargs)
  if views.shape[0] % num_views:
    raise ValueError(f"{views.shape[0]} views do not split into {num_views} equal blocks")
  variables, outputs = dict(variables), []
  for block in jnp.split(views, num_views):
    output, updates = module.apply(variables, block, mutable=["batch_stats"], **kwargs)
    if "batch_stats" in updates:
      variables["batch_stats"] = updates["batch_stats"]
    outputs.append(output)
  joined = jax.tree.map(lambda *parts: jnp.concatenate(parts), *outputs)
  return joined, ({"batch_stats": variables["batch_stats"]} if "batch_stats" in variables else {})


def online_branch(encoder: nn.Module, predictor: nn.Module, params: dict, batch_stats: Any,
                  views: jax.Array, per_view: bool, train: bool) -> tuple[Any, Any, dict]:
  """MoCo v3's and SimSiam's online branch: the encoder (its BatchNorm running averages
  updated) on the two views, then the predictor on its projections. The predictor always
  normalises with batch statistics, whatever `train` says, and its running averages are
  dropped. Returns (projections, predictions, the encoder's {"batch_stats"} updates)."""
  (_, projections), updates = apply(
      encoder, {"params": params["encoder"], "batch_stats": batch_stats}, views, 2, per_view,
      train=train)
  predictions, _ = apply(predictor, {"params": params["predictor"]}, projections, 2, per_view,
                         train=True)
  return projections, predictions, updates
