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


def byol_loss(online_predictions: jax.Array, target_projections: jax.Array) -> jax.Array:
  """BYOL's normalised MSE, Grill et al. 2020 eq. (2): mean over rows of 2 - 2 cos(p, z).

  The target is stop-gradiented here, not by the caller, so the target network can never
  receive a gradient through this loss. Symmetrise by calling it with both view orders.

  Args:
    online_predictions: [B, D] predictor outputs of the online network.
    target_projections: [B, D] projections of the other view by the target network.
  """
  if online_predictions.shape != target_projections.shape:
    raise ValueError(f"byol_loss needs matching shapes, got {online_predictions.shape} and "
                     f"{target_projections.shape}")
  p = l2_normalize(online_predictions.astype(jnp.float32))
  z = l2_normalize(jax.lax.stop_gradient(target_projections).astype(jnp.float32))
  return jnp.mean(2.0 - 2.0 * jnp.sum(p * z, axis=-1))


def info_nce(queries: jax.Array, keys: jax.Array, temperature: float,
             negatives: jax.Array | None = None, *,
             scale_by_temperature: bool = True) -> tuple[jax.Array, jax.Array]:
  """InfoNCE with the positive of query i being key i.

  Without `negatives` this is MoCo v3 (Chen, Xie, He 2021, Algorithm 1): the other keys
  of the (global) batch are the negatives, logits = q @ k.T / T. With `negatives`, a
  [Q, D] MoCo v2 queue, the logits of query i are [q_i . k_i, q_i . queue] / T: only the
  queue supplies negatives, the other keys in the batch do not.

  MoCo v3 multiplies the loss by 2T (so its gradient scale does not depend on T);
  `scale_by_temperature` does that and is on by default, so MoCo v2 callers pass False.
  Keys and negatives come from the momentum encoder / the queue and get no gradient.

  Returns:
    (loss, top1): the mean cross-entropy, and the fraction of queries whose positive
    has the largest logit.
  """
  if queries.shape != keys.shape:
    raise ValueError(f"info_nce needs queries and keys of the same shape, got {queries.shape} "
                     f"and {keys.shape}")
  q = l2_normalize(queries.astype(jnp.float32))
  k = l2_normalize(jax.lax.stop_gradient(keys).astype(jnp.float32))
  if negatives is None:
    logits = q @ k.T / temperature
    positives = jnp.arange(q.shape[0])
  else:
    if negatives.ndim != 2 or negatives.shape[1] != q.shape[1]:
      raise ValueError(f"info_nce negatives must be [Q, {q.shape[1]}], got {negatives.shape}")
    queue = l2_normalize(jax.lax.stop_gradient(negatives).astype(jnp.float32))
    positive_logit = jnp.sum(q * k, axis=-1, keepdims=True)
    logits = jnp.concatenate([positive_logit, q @ queue.T], axis=1) / temperature
    positives = jnp.zeros(q.shape[0], dtype=jnp.int32)
  chosen = jnp.take_along_axis(logits, positives[:, None], axis=1)[:, 0]
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - chosen)
  if scale_by_temperature:
    loss = loss * (2.0 * temperature)
  top1 = jnp.mean(jnp.argmax(logits, axis=1) == positives)
  return loss, top1


def dino_loss(student_logits: jax.Array | list[jax.Array] | tuple[jax.Array, ...],
              teacher_logits: jax.Array, center: jax.Array, student_temperature: float,
              teacher_temperature: float, num_global: int) -> tuple[jax.Array, jax.Array]:
  """DINO's cross-entropy, Caron et al. 2021 Algorithm 1 and the official DINOLoss.

  Every teacher view i (a global crop) is a target for every student view j != i; the
  per-pair cross-entropies are averaged over the batch, then over the pairs. The student
  is a list because local and global crops have different resolutions and so come from
  separate forward passes; a stacked [V, B, K] array works too.

  Args:
    student_logits: V arrays [B, K] (or [V, B, K]); the first `num_global` are the global
      crops, in the same order as the teacher's views.
    teacher_logits: [num_global, B, K] teacher outputs on the global crops.
    center: [K] or [1, K] running centre of the teacher logits.
    student_temperature, teacher_temperature: the two softmax temperatures.
    num_global: the number of global crops.

  Returns:
    (loss, teacher_probs): the loss and the [num_global, B, K] teacher targets, returned
    for the teacher-entropy collapse diagnostic.
  """
  students = list(student_logits)
  if teacher_logits.ndim != 3 or teacher_logits.shape[0] != num_global:
    raise ValueError(f"dino_loss needs teacher_logits of shape [num_global={num_global}, B, K], "
                     f"got {teacher_logits.shape}")
  if len(students) < num_global:
    raise ValueError(f"dino_loss needs at least num_global={num_global} student views (the "
                     f"global crops come first), got {len(students)}")
  if num_global < 1 or len(students) < 2:
    raise ValueError("dino_loss needs at least one teacher view and two student views")
  for view in students:
    if view.shape != teacher_logits.shape[1:]:
      raise ValueError(f"dino_loss student views must be {teacher_logits.shape[1:]} like the "
                       f"teacher's, got {view.shape}")
  centered = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32) - center.astype(jnp.float32))
  teacher_probs = jax.nn.softmax(centered / teacher_temperature, axis=-1)
  total = jnp.zeros((), jnp.float32)
  num_pairs = 0
  for j, view in enumerate(students):
    student_log_probs = jax.nn.log_softmax(view.astype(jnp.float32) / student_temperature, axis=-1)
    # [num_global]: the batch-mean cross-entropy of every teacher view against view j.
    cross_entropy = -jnp.mean(jnp.einsum("gbk,bk->gb", teacher_probs, student_log_probs), axis=1)
    for i in range(num_global):
      if i != j:  # A crop is never its own target.
        total = total + cross_entropy[i]
        num_pairs += 1
  return total / num_pairs, teacher_probs


def dino_center_update(center: jax.Array, teacher_logits: jax.Array, momentum: float) -> jax.Array:
  """EMA of the teacher logits' mean over views and the global batch (DINO eq. (4)).

  Under jit the mean is over the global arrays, which is the official code's
  all-reduce of the per-device sums divided by the global count.
  """
  batch_center = jnp.mean(teacher_logits.astype(jnp.float32).reshape(-1, teacher_logits.shape[-1]),
                          axis=0)
  new_center = center.astype(jnp.float32) * momentum + batch_center * (1.0 - momentum)
  return jax.lax.stop_gradient(new_center).reshape(center.shape).astype(center.dtype)
