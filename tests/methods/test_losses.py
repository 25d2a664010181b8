"""NT-Xent against an independent float64 numpy computation written from the paper."""
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.lib import losses


def numpy_nt_xent(z, temperature):
  """SimCLR eq. (1): for each anchor i with positive j(i), the mean over all 2N anchors of
  -log( exp(sim(i,j)/T) / sum_{k != i} exp(sim(i,k)/T) ), sim = cosine similarity."""
  z = np.asarray(z, np.float64)
  two_n = len(z)
  n = two_n // 2
  total, correct = 0.0, 0
  for i in range(two_n):
    j = i + n if i < n else i - n
    sims = np.array([z[i] @ z[k] / np.linalg.norm(z[i]) / np.linalg.norm(z[k]) for k in range(two_n)])
    others = [k for k in range(two_n) if k != i]
    denominator = np.sum(np.exp(sims[others] / temperature))
    total += -np.log(np.exp(sims[j] / temperature) / denominator)
    correct += others[int(np.argmax(sims[others]))] == j
  return total / two_n, correct / two_n


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(temperature):
  z = np.random.default_rng(0).standard_normal((12, 5)).astype(np.float32)
  loss, top1 = losses.nt_xent(jnp.asarray(z), temperature)
  ref_loss, ref_top1 = numpy_nt_xent(z, temperature)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  assert float(top1) == pytest.approx(ref_top1)


def test_nt_xent_perfect_pairs_have_top1_one_and_low_loss():
  base = np.eye(4, 8, dtype=np.float32) * 3
  z = np.concatenate([base, base + 0.01])
  loss, top1 = losses.nt_xent(jnp.asarray(z), 0.1)
  assert float(top1) == 1.0
  ref_loss, _ = numpy_nt_xent(z, 0.1)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4)
  assert float(loss) < 1e-3


def test_nt_xent_rejects_odd_batch():
  with pytest.raises(ValueError, match="even number of rows"):
    losses.nt_xent(jnp.ones((5, 3)), 0.5)


def test_nt_xent_gradient_is_finite_at_a_zero_row():
  import jax
  z = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
  z[3] = 0.0  # e.g. a ReLU-ended projector whose units are all off for one view
  grads = jax.grad(lambda e: losses.nt_xent(e, 0.1)[0])(jnp.asarray(z))
  assert np.all(np.isfinite(np.asarray(grads)))
  # Away from zero, l2_normalize is still x / ||x||.
  np.testing.assert_allclose(np.asarray(losses.l2_normalize(jnp.asarray(z[:1]))),
                             z[:1] / np.linalg.norm(z[:1]), rtol=1e-6)
  assert np.all(np.asarray(losses.l2_normalize(jnp.zeros((1, 4)))) == 0)
