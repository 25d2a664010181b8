"""The SimSiam, Barlow Twins, VICReg and SimDINO losses against float64 numpy written from
their papers, and hand computations at points where the answer is known."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.lib import losses

RNG = np.random.default_rng(0)


def f64(x):
  return np.asarray(x, np.float64)


def numpy_negative_cosine(p, z):
  p, z = f64(p), f64(z)
  return -np.mean(np.sum(p * z, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(z, axis=1))


def numpy_barlow(z1, z2, lam, eps=1e-5):
  """Zbontar et al. eq. (1)-(2): C over the batch-standardised embeddings (BatchNorm's
  biased variance, eps inside the root); sum (1 - C_ii)^2 + lam * sum_{i != j} C_ij^2."""
  z1, z2 = f64(z1), f64(z2)
  n, d = z1.shape
  standardise = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + eps)
  c = standardise(z1).T @ standardise(z2) / n
  on = sum((1 - c[i, i]) ** 2 for i in range(d))
  off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
  return on + lam * off


def numpy_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
  """Bardes et al. eq. (1)-(6), term by term."""
  z1, z2 = f64(z1), f64(z2)
  n, d = z1.shape
  def v(z):
    return sum(max(0.0, gamma - np.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)) / d
  def c(z):
    mean = z.mean(0)
    cov = sum(np.outer(z[i] - mean, z[i] - mean) for i in range(n)) / (n - 1)
    return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
  s = sum(np.sum((z1[i] - z2[i]) ** 2) for i in range(n)) / (n * d)
  return lam * s + mu * (v(z1) + v(z2)) + nu * (c(z1) + c(z2)), (s, v(z1) + v(z2), c(z1) + c(z2))


def numpy_coding_rate(z, eps):
  z = f64(z)
  n, d = z.shape
  sign, logdet = np.linalg.slogdet(np.eye(d) + d / (n * eps ** 2) * z.T @ z)
  assert sign > 0
  return 0.5 * logdet


def test_negative_cosine_matches_numpy_and_stops_the_target_gradient():
  p, z = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5))
  np.testing.assert_allclose(float(losses.negative_cosine(p, z)), numpy_negative_cosine(p, z),
                             rtol=1e-6)
  assert float(losses.negative_cosine(z, z)) == pytest.approx(-1.0, abs=1e-6)
  grad_target = jax.grad(lambda t: losses.negative_cosine(jnp.asarray(p), t))(jnp.asarray(z))
  assert np.all(np.asarray(grad_target) == 0)


def test_barlow_twins_matches_numpy():
  z1 = RNG.normal(size=(16, 6))
  z2 = z1 + 0.5 * RNG.normal(size=(16, 6))
  value, c = losses.barlow_twins(z1, z2, redundancy_weight=0.3)
  np.testing.assert_allclose(float(value), numpy_barlow(z1, z2, 0.3), rtol=1e-5)
  assert c.shape == (6, 6)


def test_barlow_twins_by_hand():
  """Two columns of +-1 that are orthogonal, mean 0 and variance 1: C = I/(1+eps), so the
  loss is 2 (eps/(1+eps))^2 ~ 0; and a constant z standardises to 0: C = 0, loss = d."""
  z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  value, c = losses.barlow_twins(z, z, redundancy_weight=1.0, eps=1e-5)
  np.testing.assert_allclose(np.asarray(c), np.eye(2) / (1 + 1e-5), atol=1e-6)
  assert float(value) == pytest.approx(2 * (1e-5 / (1 + 1e-5)) ** 2, abs=1e-9)
  constant = np.ones((4, 3), np.float32)
  assert float(losses.barlow_twins(constant, constant, 0.5)[0]) == pytest.approx(3.0)


def test_vicreg_matches_numpy_term_by_term():
  z1 = RNG.normal(size=(12, 5)) * 0.7
  z2 = z1 + 0.3 * RNG.normal(size=(12, 5))
  value, terms = losses.vicreg(z1, z2)
  want, (s, v, c) = numpy_vicreg(z1, z2)
  np.testing.assert_allclose(float(terms["invariance"]), s, rtol=1e-5)
  np.testing.assert_allclose(float(terms["variance"]), v, rtol=1e-5)
  np.testing.assert_allclose(float(terms["covariance"]), c, rtol=1e-5)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  # Other weights and hinge target.
  value, _ = losses.vicreg(z1, z2, 2.0, 3.0, 4.0, std_target=2.0, eps=1e-3)
  np.testing.assert_allclose(float(value), numpy_vicreg(z1, z2, 2.0, 3.0, 4.0, 2.0, 1e-3)[0],
                             rtol=1e-5)


def test_vicreg_by_hand_at_collapse():
  """A constant embedding: no invariance or covariance cost, and each branch's variance
  hinge is 1 - sqrt(1e-4) = 0.99: the loss is 25 * 2 * 0.99 = 49.5."""
  constant = np.full((8, 4), 0.3, np.float32)
  value, terms = losses.vicreg(constant, constant)
  assert float(terms["invariance"]) == 0 and float(terms["covariance"]) < 1e-20
  assert float(value) == pytest.approx(49.5, rel=1e-6)


def test_coding_rate_matches_the_log_determinant():
  z = RNG.normal(size=(20, 6))
  for eps in (0.5, 0.2236):
    np.testing.assert_allclose(float(losses.coding_rate(z, eps)), numpy_coding_rate(z, eps),
                               rtol=1e-5)


def test_coding_rate_by_hand():
  """n copies of one unit vector: Z^T Z = n u u^T has one eigenvalue n, so
  R = 1/2 log(1 + d / eps^2); an orthonormal Z (n = d) gives d/2 log(1 + d / (n eps^2))."""
  d, eps = 4, 0.5
  u = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
  assert float(losses.coding_rate(np.tile(u, (10, 1)), eps)) == pytest.approx(
      0.5 * np.log(1 + d / eps ** 2), rel=1e-5)
  assert float(losses.coding_rate(np.eye(d, dtype=np.float32), eps)) == pytest.approx(
      d / 2 * np.log(1 + 1 / eps ** 2), rel=1e-5)


def numpy_simdino_alignment(student, teacher):
  """Mean over (teacher global i, student view j != i) and the batch of 1/2 ||s - t||^2
  between l2-normalised rows."""
  unit = lambda x: f64(x) / np.linalg.norm(f64(x), axis=-1, keepdims=True)
  terms = [np.mean(0.5 * np.sum((unit(s) - unit(teacher[i])) ** 2, -1))
           for j, s in enumerate(student) for i in range(len(teacher)) if i != j]
  return np.mean(terms)


def test_simdino_alignment_matches_numpy_and_is_one_minus_cosine():
  student = [RNG.normal(size=(5, 8)) for _ in range(4)]  # 2 global + 2 local
  teacher = RNG.normal(size=(2, 5, 8))
  got = float(losses.simdino_alignment([jnp.asarray(s) for s in student], jnp.asarray(teacher)))
  np.testing.assert_allclose(got, numpy_simdino_alignment(student, teacher), rtol=1e-5)
  # For unit vectors 1/2 ||a - b||^2 = 1 - cos(a, b): one pair, one global and one student view.
  a, b = RNG.normal(size=(5, 8)), RNG.normal(size=(1, 5, 8))
  one = float(losses.simdino_alignment([jnp.asarray(b[0]), jnp.asarray(a)], jnp.asarray(b)))
  np.testing.assert_allclose(one, 1 + numpy_negative_cosine(a, b[0]), rtol=1e-5)
  grad_teacher = jax.grad(lambda t: losses.simdino_alignment([jnp.asarray(s) for s in student], t))(
      jnp.asarray(teacher))
  assert np.all(np.asarray(grad_teacher) == 0)
