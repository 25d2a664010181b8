"""Loss functions shared by the methods.

Every function here is pure and works on *global* arrays: under `jax.jit` over a
sharded batch, XLA inserts the collectives, so the similarity matrix spans the whole
global batch with no hand-written all-gather.
"""
import jax
import jax.numpy as jnp
import optax


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


def negative_cosine(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over rows (Chen & He 2021, eq. 1
  with the stop-gradient of eq. 3). Symmetrise as (D(p1, z2) + D(p2, z1)) / 2.

  The target is stop-gradiented here, so its branch never receives a gradient.
  """
  if predictions.shape != targets.shape:
    raise ValueError(f"negative_cosine needs matching shapes, got {predictions.shape} and "
                     f"{targets.shape}")
  p = l2_normalize(predictions.astype(jnp.float32))
  z = l2_normalize(jax.lax.stop_gradient(targets).astype(jnp.float32))
  return -jnp.mean(jnp.sum(p * z, axis=-1))


def _standardize(z: jax.Array, eps: float) -> jax.Array:
  """Each column to zero mean and unit (biased) variance over the rows: BatchNorm without
  affine in training mode, which is how the official Barlow Twins code normalises."""
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, axis=0, keepdims=True)
  variance = jnp.mean(jnp.square(z - mean), axis=0, keepdims=True)
  return (z - mean) * jax.lax.rsqrt(variance + eps)


def barlow_twins(z1: jax.Array, z2: jax.Array, redundancy_weight: float,
                 eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """Barlow Twins, Zbontar et al. 2021 eq. (1)-(2):

      C = z1_std^T z2_std / N,   L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2

  where z_std is each embedding dimension standardised over the batch (biased variance,
  `eps` inside the root as BatchNorm's). On global arrays N is the global batch, so C is
  the official code's all-reduced cross-correlation.

  Args:
    z1, z2: [N, D] projector outputs of the two views, row i of each from image i.
    redundancy_weight: lambda (the paper: 5.1e-3 at D = 8192).

  Returns:
    (loss, C): the loss and the [D, D] cross-correlation (for diagnostics).
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"barlow_twins needs two [N, D] arrays of one shape, got {z1.shape} and "
                     f"{z2.shape}")
  c = _standardize(z1, eps).T @ _standardize(z2, eps) / z1.shape[0]
  diagonal = jnp.diagonal(c)
  on_diagonal = jnp.sum(jnp.square(1.0 - diagonal))
  off_diagonal = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diagonal))
  return on_diagonal + redundancy_weight * off_diagonal, c


def vicreg_terms(z1: jax.Array, z2: jax.Array, std_target: float = 1.0,
                 eps: float = 1e-4) -> dict[str, jax.Array]:
  """The three VICReg terms, Bardes, Ponce, LeCun 2022 eq. (1)-(5), unweighted:

      invariance  s(Z, Z') = mean over n and d of (z - z')^2                (eq. 5, the MSE)
      variance    v(Z) = (1/d) sum_j max(0, gamma - sqrt(Var(z_j) + eps))   (eq. 1)
      covariance  c(Z) = (1/d) sum_{i != j} C(Z)_ij^2,
                  C(Z) = (1/(n-1)) sum_i (z_i - z_mean)(z_i - z_mean)^T     (eq. 3-4)

  Var is the unbiased variance over the batch. `variance` and `covariance` are summed
  over the two branches, v(Z) + v(Z') and c(Z) + c(Z'), as eq. (6) uses them.
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"vicreg needs two [N, D] arrays of one shape, got {z1.shape} and {z2.shape}")
  n, d = z1.shape
  if n < 2:
    raise ValueError("vicreg needs at least 2 rows: its variance and covariance are over the batch")
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)

  def variance(z):
    std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
    return jnp.mean(jax.nn.relu(std_target - std))

  def covariance(z):
    centred = z - jnp.mean(z, axis=0, keepdims=True)
    cov = centred.T @ centred / (n - 1)
    return (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))) / d

  return {"invariance": jnp.mean(jnp.square(z1 - z2)),
          "variance": variance(z1) + variance(z2),
          "covariance": covariance(z1) + covariance(z2)}


def vicreg(z1: jax.Array, z2: jax.Array, invariance_weight: float = 25.0,
           variance_weight: float = 25.0, covariance_weight: float = 1.0,
           std_target: float = 1.0, eps: float = 1e-4) -> tuple[jax.Array, dict]:
  """VICReg's loss, eq. (6): lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')], with
  the paper's lambda = mu = 25, nu = 1 as defaults. Returns (loss, the unweighted terms).

  The official code halves the variance term (mean of the two branches' hinges), which is
  this loss with variance_weight = 12.5.
  """
  terms = vicreg_terms(z1, z2, std_target, eps)
  value = (invariance_weight * terms["invariance"] + variance_weight * terms["variance"]
           + covariance_weight * terms["covariance"])
  return value, terms


def coding_rate(z: jax.Array, eps: float) -> jax.Array:
  """R_eps(Z) = 1/2 logdet(I_d + d / (n eps^2) Z^T Z) of n features [n, d] (Ma et al.'s
  rate-distortion of Gaussian features, as SimDINO writes it).

  Computed from the Cholesky factor of the [d, d] matrix (positive definite: at least I),
  so R = sum(log(diag(L))). On global arrays n is the global batch and Z^T Z sums over
  every device's rows.
  """
  if z.ndim != 2:
    raise ValueError(f"coding_rate needs [n, d] features, got {z.shape}")
  n, d = z.shape
  z = z.astype(jnp.float32)
  gram = jnp.eye(d, dtype=jnp.float32) + (d / (n * eps ** 2)) * (z.T @ z)
  return jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(gram))))


def simdino_alignment(student: list[jax.Array] | tuple[jax.Array, ...], teacher: jax.Array
                      ) -> jax.Array:
  """SimDINO's student-teacher term: the mean of 1/2 ||z_s - z_t||^2 between l2-normalised
  features, over the batch and over every pair (teacher global view i, student view j != i).

  Args:
    student: V arrays [B, D] (or [V, B, D]); the first G are the global crops, in the
      teacher's order, the rest local crops (any resolution: they are separate arrays).
    teacher: [G, B, D] teacher features of the global crops; stop-gradiented here.
  """
  students = list(student)
  if teacher.ndim != 3 or len(students) < 2 or len(students) < teacher.shape[0]:
    raise ValueError(f"simdino_alignment needs teacher [G, B, D] and at least max(G, 2) student "
                     f"views, got {teacher.shape} and {len(students)}")
  t = l2_normalize(jax.lax.stop_gradient(teacher).astype(jnp.float32))
  total, pairs = jnp.zeros((), jnp.float32), 0
  for j, view in enumerate(students):
    if view.shape != teacher.shape[1:]:
      raise ValueError(f"simdino_alignment student views must be {teacher.shape[1:]}, "
                       f"got {view.shape}")
    s = l2_normalize(view.astype(jnp.float32))
    for i in range(teacher.shape[0]):
      if i != j:  # a crop is never its own target
        total = total + 0.5 * jnp.mean(jnp.sum(jnp.square(s - t[i]), axis=-1))
        pairs += 1
  return total / pairs


def clip_loss(image_embeddings: jax.Array, text_embeddings: jax.Array,
              logit_scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """CLIP's symmetric InfoNCE (Radford et al. 2021, Figure 3): l2-normalised image and
  text embeddings [N, D] of N pairs, logits = scale * I @ T^T over the whole (global)
  batch, the mean of the image->text and text->image cross-entropies with pair i as
  class i. Returns (loss, the logits [N, N])."""
  images = l2_normalize(image_embeddings)
  texts = l2_normalize(text_embeddings)
  logits = logit_scale * images @ texts.T
  labels = jnp.arange(logits.shape[0])
  image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  return (image_to_text + text_to_image) / 2, logits


def token_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy, accuracy) of logits [..., V] for integer targets [...], over the
  positions where `weights` is 1 (MLM's chosen tokens, a causal LM's non-pad targets)."""
  weights = weights.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return jnp.sum(cross_entropy * weights) / count, jnp.sum(correct * weights) / count
