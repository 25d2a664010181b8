"""BYOL / MoCo / DINO maths, EMA schedules, the queue and the collapse diagnostics, each
against an independent float64 numpy computation written from the paper's formula."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.lib import diagnostics, losses, teacher

RNG = np.random.default_rng(0)


def normal(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


def numeric_gradient(function, x, step=1e-5):
  """Central finite differences of a float64 numpy function at x."""
  x = np.asarray(x, np.float64)
  gradient = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    plus, minus = x.copy(), x.copy()
    plus[index] += step
    minus[index] -= step
    gradient[index] = (function(plus) - function(minus)) / (2 * step)
  return gradient


def cosine(a, b):
  return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def log_softmax(row):
  shifted = row - np.max(row)
  return shifted - np.log(np.sum(np.exp(shifted)))


# ----------------------------------------------------------------------------- BYOL

def numpy_byol(p, z):
  """Grill et al. eq. (2): ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z), mean over rows."""
  p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
  total = 0.0
  for i in range(len(p)):
    difference = p[i] / np.linalg.norm(p[i]) - z[i] / np.linalg.norm(z[i])
    total += difference @ difference
  return total / len(p)


def test_byol_loss_matches_numpy_and_bounds():
  p, z = normal(6, 5), normal(6, 5)
  np.testing.assert_allclose(float(jax.jit(losses.byol_loss)(p, z)), numpy_byol(p, z), rtol=1e-5)
  assert float(losses.byol_loss(p, p * 3)) == pytest.approx(0.0, abs=1e-6)
  assert float(losses.byol_loss(p, -p)) == pytest.approx(4.0, abs=1e-5)
  bf16 = losses.byol_loss(jnp.asarray(p, jnp.bfloat16), jnp.asarray(z, jnp.bfloat16))
  assert bf16.dtype == jnp.float32


def test_byol_loss_gradient_stops_at_the_target():
  p, z = normal(4, 3), normal(4, 3)
  target_gradient = jax.grad(losses.byol_loss, argnums=1)(p, z)
  assert np.all(np.asarray(target_gradient) == 0)
  online_gradient = jax.grad(losses.byol_loss)(p, z)
  expected = numeric_gradient(lambda x: numpy_byol(x, z), p)
  np.testing.assert_allclose(np.asarray(online_gradient), expected, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- MoCo

def numpy_moco_v3(q, k, temperature, scale=True):
  """MoCo v3 Algorithm 1: CE over logits q_i . k_j / T (cosine), label i, times 2T."""
  n = len(q)
  total, correct = 0.0, 0
  for i in range(n):
    logits = np.array([cosine(q[i], k[j]) / temperature for j in range(n)], np.float64)
    total += -log_softmax(logits)[i]
    correct += int(np.argmax(logits) == i)
  loss = total / n
  return (loss * 2 * temperature if scale else loss), correct / n


def numpy_moco_v2(q, k, queue, temperature):
  """MoCo v2: logits [q_i . k_i, q_i . queue_1 .. queue_Q] / T, label 0 (no 2T factor)."""
  n = len(q)
  total, correct = 0.0, 0
  for i in range(n):
    logits = [cosine(q[i], k[i]) / temperature]
    logits += [cosine(q[i], entry) / temperature for entry in queue]
    logits = np.array(logits, np.float64)
    total += -log_softmax(logits)[0]
    correct += int(np.argmax(logits) == 0)
  return total / n, correct / n


@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
def test_info_nce_v3_matches_numpy(temperature):
  q, k = normal(8, 4), normal(8, 4)
  k[:4] = q[:4] + 0.1 * normal(4, 4)  # near positives for half the rows, so top1 is not trivially 0
  loss, top1 = jax.jit(losses.info_nce, static_argnums=2)(q, k, temperature)
  ref_loss, ref_top1 = numpy_moco_v3(q, k, temperature)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  assert float(top1) == pytest.approx(ref_top1)
  unscaled, _ = losses.info_nce(q, k, temperature, scale_by_temperature=False)
  np.testing.assert_allclose(float(unscaled), numpy_moco_v3(q, k, temperature, scale=False)[0],
                             rtol=1e-5)


def test_info_nce_v2_uses_only_the_queue_as_negatives():
  q, k, queue = normal(6, 4), normal(6, 4), normal(10, 4)
  k[:3] = q[:3]
  loss, top1 = losses.info_nce(q, k, 0.2, negatives=queue * 5.0, scale_by_temperature=False)
  ref_loss, ref_top1 = numpy_moco_v2(q, k, queue, 0.2)  # the queue is normalised inside
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  assert float(top1) == pytest.approx(ref_top1)
  # The other keys of the batch are not negatives: each row alone gives the same loss.
  per_row = [float(losses.info_nce(q[i:i + 1], k[i:i + 1], 0.2, negatives=queue,
                                   scale_by_temperature=False)[0]) for i in range(len(q))]
  np.testing.assert_allclose(float(loss), np.mean(per_row), rtol=1e-5)
  scaled, _ = losses.info_nce(q, k, 0.2, negatives=queue)
  np.testing.assert_allclose(float(scaled), ref_loss * 0.4, rtol=1e-5)


@pytest.mark.parametrize("with_queue", [False, True])
def test_info_nce_gradient_stops_at_keys_and_queue(with_queue):
  q, k, queue = normal(4, 3), normal(4, 3), normal(5, 3)
  negatives = queue if with_queue else None
  loss = lambda q_, k_, n_: losses.info_nce(q_, k_, 0.5, n_)[0]
  assert np.all(np.asarray(jax.grad(loss, argnums=1)(q, k, negatives)) == 0)
  if with_queue:
    assert np.all(np.asarray(jax.grad(loss, argnums=2)(q, k, queue)) == 0)
    reference = lambda x: numpy_moco_v2(x, k, queue, 0.5)[0] * 2 * 0.5
  else:
    reference = lambda x: numpy_moco_v3(x, k, 0.5)[0]
  np.testing.assert_allclose(np.asarray(jax.grad(loss)(q, k, negatives)),
                             numeric_gradient(reference, q), rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- DINO

def numpy_dino(students, teachers, center, student_temperature, teacher_temperature):
  """DINO Algorithm 1 / DINOLoss: mean over pairs (teacher i, student j != i) of the
  batch mean of sum_k -P_t(i)_k log P_s(j)_k, P_t = softmax((t - c) / T_t)."""
  students = [np.asarray(s, np.float64) for s in students]
  teachers, center = np.asarray(teachers, np.float64), np.asarray(center, np.float64)
  batch = teachers.shape[1]
  probs = np.zeros_like(teachers)
  for i in range(len(teachers)):
    for b in range(batch):
      probs[i, b] = np.exp(log_softmax((teachers[i, b] - center) / teacher_temperature))
  total, pairs = 0.0, 0
  for i in range(len(teachers)):
    for j in range(len(students)):
      if i == j:
        continue
      pair = 0.0
      for b in range(batch):
        pair += -np.sum(probs[i, b] * log_softmax(students[j][b] / student_temperature))
      total += pair / batch
      pairs += 1
  return total / pairs, probs


def dino_inputs(num_global=2, num_local=4, batch=3, classes=7):
  students = [normal(batch, classes) for _ in range(num_global + num_local)]
  teachers = normal(num_global, batch, classes)
  return students, teachers, normal(classes) * 0.3


@pytest.mark.parametrize("num_local", [0, 1, 4])
def test_dino_loss_matches_numpy(num_local):
  students, teachers, center = dino_inputs(num_local=num_local)
  loss, probs = jax.jit(losses.dino_loss, static_argnums=(3, 4, 5))(
      students, teachers, center, 0.1, 0.04, 2)
  ref_loss, ref_probs = numpy_dino(students, teachers, center, 0.1, 0.04)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(probs), ref_probs, rtol=1e-4, atol=1e-7)
  stacked, _ = losses.dino_loss(jnp.stack(students), teachers, center[None], 0.1, 0.04, 2)
  np.testing.assert_allclose(float(stacked), float(loss), rtol=1e-6)


def test_dino_loss_gradient_stops_at_the_teacher_and_centre():
  students, teachers, center = dino_inputs(num_local=1, batch=2, classes=4)
  loss = lambda s, t, c: losses.dino_loss(s, t, c, 0.1, 0.04, 2)[0]
  assert np.all(np.asarray(jax.grad(loss, argnums=1)(students, teachers, center)) == 0)
  assert np.all(np.asarray(jax.grad(loss, argnums=2)(students, teachers, center)) == 0)
  stacked = np.stack(students)
  gradient = jax.grad(loss)(jnp.asarray(stacked), teachers, center)
  expected = numeric_gradient(lambda s: numpy_dino(list(s), teachers, center, 0.1, 0.04)[0],
                              stacked)
  np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-3, atol=1e-5)


def test_dino_loss_rejects_mismatched_views():
  students, teachers, center = dino_inputs()
  with pytest.raises(ValueError, match="num_global"):
    losses.dino_loss(students, teachers, center, 0.1, 0.04, 3)
  with pytest.raises(ValueError, match="at least"):
    losses.dino_loss(students[:1], teachers, center, 0.1, 0.04, 2)


def test_dino_center_update_by_hand():
  center = np.array([1.0, -2.0, 0.5], np.float32)
  teachers = np.array([[[0.0, 2.0, 4.0], [2.0, 0.0, 4.0]],
                       [[4.0, 2.0, 0.0], [2.0, 4.0, 0.0]]], np.float32)  # mean [2, 2, 2]
  new = jax.jit(losses.dino_center_update)(center, teachers, 0.9)
  np.testing.assert_allclose(np.asarray(new), [0.9 + 0.2, -1.8 + 0.2, 0.45 + 0.2], rtol=1e-6)
  row = losses.dino_center_update(center[None], teachers, 0.9)
  assert row.shape == (1, 3)
  np.testing.assert_allclose(np.asarray(row)[0], np.asarray(new), rtol=1e-6)


# ----------------------------------------------------------------------------- EMA, schedules

def test_ema_update_mixes_and_keeps_dtypes():
  target = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.full((3,), 2.0, jnp.bfloat16)}
  online = {"w": jnp.zeros((2, 2), jnp.float32), "b": jnp.full((3,), 4.0, jnp.bfloat16)}
  new = jax.jit(teacher.ema_update)(target, online, 0.75)
  np.testing.assert_allclose(np.asarray(new["w"]), 0.75, rtol=1e-7)
  np.testing.assert_allclose(np.asarray(new["b"], np.float32), 2.5)
  assert new["w"].dtype == jnp.float32 and new["b"].dtype == jnp.bfloat16


def test_cosine_momentum_at_chosen_steps():
  base, total = 0.996, 1000
  momentum = jax.jit(teacher.cosine_momentum, static_argnums=(1, 2))
  by_hand = lambda k: 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
  assert float(momentum(0, total, base)) == pytest.approx(base, abs=1e-7)
  assert float(momentum(total, total, base)) == pytest.approx(1.0, abs=1e-7)
  assert float(momentum(total // 2, total, base)) == pytest.approx(1 - (1 - base) / 2, abs=1e-7)
  assert float(momentum(250, total, base)) == pytest.approx(by_hand(250), abs=1e-7)
  assert float(momentum(-5, total, base)) == pytest.approx(base, abs=1e-7)   # clipped
  assert float(momentum(5000, total, base)) == pytest.approx(1.0, abs=1e-7)  # clipped
  # A short run's end below 1 (final_momentum), and lightly's constant τ (final = base).
  ending = jax.jit(teacher.cosine_momentum, static_argnums=(1, 2, 3))
  short = lambda k: 0.99 - (0.99 - 0.9) * (math.cos(math.pi * k / total) + 1) / 2
  assert float(ending(total, total, 0.9, 0.99)) == pytest.approx(0.99, abs=1e-7)
  assert float(ending(250, total, 0.9, 0.99)) == pytest.approx(short(250), abs=1e-7)
  assert float(ending(400, total, 0.99, 0.99)) == pytest.approx(0.99, abs=1e-7)


def test_cosine_schedule_and_linear_warmup():
  assert float(teacher.cosine_schedule(0, 10, 1.0, 0.0)) == pytest.approx(1.0)
  assert float(teacher.cosine_schedule(5, 10, 1.0, 0.0)) == pytest.approx(0.5)
  assert float(teacher.cosine_schedule(10, 10, 1.0, 0.0)) == pytest.approx(0.0, abs=1e-7)
  assert float(teacher.linear_warmup(3, 4, 0.0, 2.0)) == pytest.approx(1.5)
  assert float(teacher.linear_warmup(9, 4, 0.0, 2.0)) == pytest.approx(2.0)
  assert float(teacher.linear_warmup(0, 0, 0.0, 2.0)) == pytest.approx(2.0)  # no warm-up


def test_teacher_temperature_warm_up():
  schedule = jax.jit(lambda step: teacher.teacher_temperature(step, 30, 0.04, 0.07))
  for step, expected in [(0, 0.04), (10, 0.05), (15, 0.055), (30, 0.07), (31, 0.07), (1000, 0.07)]:
    assert float(schedule(jnp.int32(step))) == pytest.approx(expected, abs=1e-7)


# ----------------------------------------------------------------------------- queue

def test_enqueue_fills_then_overwrites_the_oldest_with_wrap_around():
  queue, pointer = jnp.zeros((5, 1)), jnp.int32(0)
  push = jax.jit(teacher.enqueue)
  queue, pointer = push(queue, pointer, jnp.array([[1.0], [2.0]]))
  assert np.asarray(queue)[:, 0].tolist() == [1, 2, 0, 0, 0] and int(pointer) == 2
  queue, pointer = push(queue, pointer, jnp.array([[3.0], [4.0]]))
  assert np.asarray(queue)[:, 0].tolist() == [1, 2, 3, 4, 0] and int(pointer) == 4
  queue, pointer = push(queue, pointer, jnp.array([[5.0], [6.0]]))  # wraps: 6 replaces 1
  assert np.asarray(queue)[:, 0].tolist() == [6, 2, 3, 4, 5] and int(pointer) == 1
  assert pointer.dtype == jnp.int32
  queue, pointer = push(queue, pointer, jnp.array([[7.0], [8.0]]))  # next oldest: 2, then 3
  assert np.asarray(queue)[:, 0].tolist() == [6, 7, 8, 4, 5] and int(pointer) == 3


def test_enqueue_rejects_a_batch_larger_than_the_queue():
  with pytest.raises(ValueError, match="no larger than the queue"):
    teacher.enqueue(jnp.zeros((3, 2)), jnp.int32(0), jnp.ones((4, 2)))


# ----------------------------------------------------------------------------- diagnostics

def numpy_effective_rank(z, eps=1e-7):
  """RankMe eq. (1): p_k = sigma_k / ||sigma||_1 + eps, exp(-sum p_k log p_k)."""
  sigma = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = sigma / np.sum(sigma) + eps
  return math.exp(-sum(pk * math.log(pk) for pk in p))


def orthonormal(rows, columns):
  return np.linalg.qr(RNG.standard_normal((rows, columns)))[0]


@pytest.mark.parametrize("rank", [1, 3])
def test_effective_rank_of_equal_singular_values_is_the_rank(rank):
  z = (orthonormal(64, rank) * 2.0) @ orthonormal(16, rank).T  # rank singular values all 2
  value = float(jax.jit(diagnostics.effective_rank)(z.astype(np.float32)))
  assert value == pytest.approx(rank, rel=1e-3)
  assert value == pytest.approx(numpy_effective_rank(z), rel=1e-3)


def test_effective_rank_matches_numpy_on_random_embeddings():
  z = normal(64, 16) * np.linspace(0.1, 3.0, 16).astype(np.float32)
  np.testing.assert_allclose(float(diagnostics.effective_rank(z)), numpy_effective_rank(z),
                             rtol=1e-4)
  assert np.isfinite(float(diagnostics.effective_rank(np.zeros((8, 4), np.float32))))


def test_effective_rank_reads_the_first_rank_rows_only():
  rows = diagnostics.RANK_ROWS
  # The first RANK_ROWS rows span 2 directions, the rest 6 more: RankMe of the first rows.
  head = RNG.standard_normal((rows, 2)) @ orthonormal(8, 2).T
  z = np.concatenate([head, RNG.standard_normal((rows, 8)) * 3.0]).astype(np.float32)
  value = float(jax.jit(diagnostics.effective_rank)(z))
  assert value == pytest.approx(numpy_effective_rank(head), rel=1e-3)
  assert value < 2.01 < numpy_effective_rank(z)


def test_embedding_std_is_zero_at_collapse_and_one_over_sqrt_d_when_spread():
  collapsed = np.tile(normal(1, 32), (50, 1))
  assert float(diagnostics.embedding_std(collapsed)) == pytest.approx(0.0, abs=1e-6)
  spread = normal(4096, 32)
  value = float(jax.jit(diagnostics.embedding_std)(spread))
  assert value == pytest.approx(1 / math.sqrt(32), rel=0.1)
  normalised = spread.astype(np.float64) / np.linalg.norm(spread, axis=1, keepdims=True)
  np.testing.assert_allclose(value, np.mean(np.std(normalised, axis=0, ddof=1)), rtol=1e-4)


def test_entropy_by_hand_and_safe_at_zero():
  probs = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]],
                   np.float32)
  expected = (math.log(2) + math.log(4) + 0.0) / 3
  assert float(jax.jit(diagnostics.entropy)(probs)) == pytest.approx(expected, rel=1e-6)
  gradient = jax.grad(diagnostics.entropy)(jnp.asarray(probs))
  assert np.all(np.isfinite(np.asarray(gradient)))
