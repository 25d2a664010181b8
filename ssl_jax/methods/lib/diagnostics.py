"""Collapse diagnostics, cheap enough to compute inside the jitted train step.

Each one is stop-gradiented at its input: they are metrics, never part of the loss.
"""
import jax
import jax.numpy as jnp

from ssl_jax.methods.lib.losses import l2_normalize


def embedding_std(z: jax.Array) -> jax.Array:
  """Mean over dimensions of the per-dimension std of the l2-normalised rows of z [N, D].

  About 1/sqrt(D) for embeddings spread over the sphere and 0 at complete collapse
  (lightly's std_of_l2_normalized; unbiased std, as torch.std). Needs N >= 2.
  """
  normalised = l2_normalize(jax.lax.stop_gradient(z).astype(jnp.float32))
  return jnp.mean(jnp.std(normalised, axis=0, ddof=1))


# RankMe reads at most this many rows (the first of the batch). An SVD's cost on a TPU grows
# steeply with its size: libtpu compiled it for [256, 8192] in 12 s on a 2-core host, for
# [512, 8192] in 54 s, and had not finished [4096, 2048] after 12 min, while VICReg's and
# Barlow Twins' paper batches give [4096, 8192] (Barlow Twins' whole step ran out of 24 GiB
# of host memory compiling; docs/scale.md). On the CPU, where LAPACK runs it, the size
# hardly matters.
RANK_ROWS = 256


def effective_rank(z: jax.Array, eps: float = 1e-7, max_rows: int = RANK_ROWS) -> jax.Array:
  """RankMe, Garrido et al. 2023 eq. (1): exp of the entropy of the normalised singular values
  of the first `max_rows` rows of z [N, D].

  Between 1 and min(N, D, max_rows); it drops towards 1 as the embeddings collapse onto
  fewer directions, which a loss value alone does not show. An all-zero z gives about 1,
  not NaN. The paper computes it on 25.6k samples; a batch's first rows are a smaller
  sample of the same quantity, enough to see a collapse.
  """
  singular_values = jnp.linalg.svd(jax.lax.stop_gradient(z[:max_rows]).astype(jnp.float32),
                                   compute_uv=False)
  total = jnp.maximum(jnp.sum(singular_values), jnp.finfo(jnp.float32).tiny)
  p = singular_values / total + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def entropy(probs: jax.Array) -> jax.Array:
  """Mean over rows of -sum_k p log p (nats), with 0 log 0 = 0.

  For DINO's teacher: log K means a uniform teacher (collapse by flattening), 0 a
  one-hot one (collapse onto one dimension).
  """
  p = jax.lax.stop_gradient(probs).astype(jnp.float32)
  positive = p > 0
  terms = jnp.where(positive, p * jnp.log(jnp.where(positive, p, 1.0)), 0.0)
  return jnp.mean(-jnp.sum(terms, axis=-1))
