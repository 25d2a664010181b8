"""Helpers shared by the methods with a momentum teacher or a queue (BYOL, MoCo, DINO).

All are pure and jit-able in their step/pointer arguments, so the schedules and the
queue live inside the jitted train step rather than in Python.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models


def ema_backbone(method_state: dict, key: str) -> dict:
  """The backbone variables of the EMA network kept at method_state[key] as {"params",
  "batch_stats"} of a {backbone, head} encoder (BYOL's and MoCo's target, DINO's teacher)."""
  ema = method_state[key]
  return models.variables(ema["params"]["backbone"], ema["batch_stats"].get("backbone"))


def encode_online_and_target(backbone_fn, key: str):
  """`encode` of a method with an online network and an EMA copy at method_state[key]
  (BYOL, MoCo): {"online": features (primary), "target": the EMA's}."""
  def encode(params, method_state, batch, config) -> dict:
    return {"online": models.encode_images(backbone_fn(params, method_state, config),
                                           batch["image"], config),
            "target": models.encode_images(ema_backbone(method_state, key), batch["image"],
                                           config)}
  return encode


def teacher_model_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The student's backbone config without stochastic depth: the official DINO teacher is
  the same architecture built with no drop path, so its targets are not randomly thinned
  (parameters are the same; drop path has none)."""
  if not model.get("drop_path_rate"):
    return model
  teacher = ml_collections.ConfigDict(model.to_dict())
  teacher.drop_path_rate = 0.0
  return teacher


def ema_update(target: Any, online: Any, momentum: float | jax.Array) -> Any:
  """Tree-wise target * m + online * (1 - m), computed in float32 and cast back.

  Casting back keeps the target's dtypes, so a bf16 target stays bf16 and the state
  layout never changes between steps. A non-float leaf (e.g. a counter) has no
  meaningful average and is copied from the online tree.
  """
  def update(target_leaf, online_leaf):
    target_leaf, online_leaf = jnp.asarray(target_leaf), jnp.asarray(online_leaf)
    if not jnp.issubdtype(target_leaf.dtype, jnp.inexact):
      return online_leaf.astype(target_leaf.dtype)
    mixed = (target_leaf.astype(jnp.float32) * momentum
             + jax.lax.stop_gradient(online_leaf).astype(jnp.float32) * (1.0 - momentum))
    return mixed.astype(target_leaf.dtype)
  return jax.tree.map(update, target, online)


def follow(method_state: dict, key: str, online: Any, momentum: jax.Array) -> tuple[dict, dict]:
  """The momentum teacher's move after the optimizer (BYOL, MoCo, DINO): the params in
  method_state[key] take one EMA step towards `online`; its batch_stats stay those its
  own forward produced. Returns (method_state, {"ema_momentum": momentum})."""
  followed = {**method_state[key],
              "params": ema_update(method_state[key]["params"], online, momentum)}
  return {**method_state, key: followed}, {"ema_momentum": momentum}


def _fraction(step, num_steps) -> jax.Array:
  """step / num_steps clipped to [0, 1]; 1 when num_steps <= 0 (the schedule is over)."""
  step = jnp.asarray(step, jnp.float32)
  num_steps = jnp.asarray(num_steps, jnp.float32)
  fraction = jnp.clip(step / jnp.maximum(num_steps, 1.0), 0.0, 1.0)
  return jnp.where(num_steps > 0, fraction, 1.0)


def cosine_schedule(step, total_steps, start: float, end: float) -> jax.Array:
  """Half-cosine from `start` at step 0 to `end` at `total_steps`, then constant."""
  fraction = _fraction(step, total_steps)
  return end + (start - end) * (jnp.cos(jnp.pi * fraction) + 1.0) / 2.0


def cosine_momentum(step, total_steps, base: float, final: float = 1.0) -> jax.Array:
  """BYOL's target momentum tau_k = final - (final - tau_base) (cos(pi k / K) + 1) / 2.

  tau_0 = base and tau_K = final (the papers: 1, the target freezes as training ends; a
  short run may end lower, or hold base with final = base, as lightly's CIFAR benchmark
  does). k is clipped to [0, K].
  """
  return cosine_schedule(step, total_steps, base, final)


def linear_warmup(step, warmup_steps, start: float, end: float) -> jax.Array:
  """Linear from `start` at step 0 to `end` at `warmup_steps`, then constant at `end`."""
  return start + (end - start) * _fraction(step, warmup_steps)


def teacher_temperature(step, warmup_steps, start: float = 0.04, end: float = 0.07) -> jax.Array:
  """DINO's teacher temperature: warmed up linearly (a sharp teacher early avoids collapse
  while the student is random), then constant."""
  return linear_warmup(step, warmup_steps, start, end)


def enqueue(queue: jax.Array, pointer: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes `keys` into the MoCo v2 ring buffer, overwriting the oldest entries.

  Rows go to (pointer + arange(B)) % Q, so B need not divide Q; the new pointer is
  (pointer + B) % Q, the position of the now-oldest entry.

  Args:
    queue: [Q, D] stored keys.
    pointer: int32 scalar, the next row to overwrite.
    keys: [B, D] new keys, B <= Q (more would overwrite keys from the same batch).
  """
  size, batch = queue.shape[0], keys.shape[0]
  if keys.ndim != 2 or queue.ndim != 2 or keys.shape[1] != queue.shape[1]:
    raise ValueError(f"enqueue needs a [Q, D] queue and [B, D] keys, got {queue.shape} and "
                     f"{keys.shape}")
  if batch > size:
    raise ValueError(f"enqueue needs a batch no larger than the queue, got B={batch} > Q={size}")
  pointer = jnp.asarray(pointer, jnp.int32)
  rows = (pointer + jnp.arange(batch, dtype=jnp.int32)) % size
  queue = queue.at[rows].set(jax.lax.stop_gradient(keys).astype(queue.dtype))
  return queue, (pointer + batch) % size
