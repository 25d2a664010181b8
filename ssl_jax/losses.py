"""Loss functions shared by the methods.

Every function here is pure and works on *global* arrays: under `jax.jit` over a
sharded batch, XLA inserts the collectives, so the similarity matrix spans the whole
global batch with no hand-written all-gather.
"""
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps): the cosine-similarity normalisation SimCLR uses.

  Written as x * rsqrt(max(||x||^2, eps^2)) so that the gradient at a zero vector is
  finite (sqrt's derivative at 0 is infinite, and 0 * inf is NaN): a ReLU-ended or
  zero-initialised head can output an exact zero row.
  """
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def nt_xent(embeddings: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """NT-Xent (normalised temperature-scaled cross-entropy), SimCLR eq. (1).

  Args:
    embeddings: [2N, D]; rows i and i + N are the two views of example i.
    temperature: the softmax temperature tau.

  Returns:
    (loss, top1): the loss averaged over all 2N anchors, and the fraction of
    anchors whose most similar other row is their positive.
  """
  two_n = embeddings.shape[0]
  if two_n % 2:
    raise ValueError(f"nt_xent needs an even number of rows (two views), got {two_n}")
  n = two_n // 2
  z = l2_normalize(embeddings.astype(jnp.float32))
  logits = z @ z.T / temperature
  # An anchor is never its own negative: mask the diagonal out of the softmax.
  logits = jnp.where(jnp.eye(two_n, dtype=bool), -jnp.inf, logits)
  positives = (jnp.arange(two_n) + n) % two_n
  positive_logit = jnp.take_along_axis(logits, positives[:, None], axis=1)[:, 0]
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive_logit)
  top1 = jnp.mean(jnp.argmax(logits, axis=1) == positives)
  return loss, top1
