"""The heads-major attention core (models/attention.py) against flax's own token-major
one: the same parameters, and the same outputs, masks, dropout and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import attention


def _pair(dropout_rate=0.0):
  make = lambda **extra: nn.MultiHeadDotProductAttention(
      num_heads=4, dropout_rate=dropout_rate, deterministic=dropout_rate == 0.0, **extra)
  return make(), make(**attention.HEADS_MAJOR)


@pytest.mark.parametrize("masked,dropout_rate", [(False, 0.0), (True, 0.0), (True, 0.3)])
def test_heads_major_attention_equals_flax(masked, dropout_rate):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 7, 32)), jnp.float32)
  mask = None
  if masked:  # causal, and the last two tokens of the first example are padding
    keys = np.ones((3, 7), bool)
    keys[0, -2:] = False
    mask = jnp.asarray(keys[:, None, None, :] & np.tril(np.ones((7, 7), bool))[None, None])
  flax_mha, ours = _pair(dropout_rate)
  rngs = {"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)}
  params = flax_mha.init(rngs, x, mask=mask)
  same_init = ours.init(rngs, x, mask=mask)
  assert jax.tree.structure(params) == jax.tree.structure(same_init)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same_init)))

  def loss(module, p):
    y = module.apply(p, x, mask=mask, rngs={"dropout": jax.random.PRNGKey(3)})
    return jnp.sum(jnp.sin(y)), y

  (l_ref, y_ref), g_ref = jax.value_and_grad(lambda p: loss(flax_mha, p), has_aux=True)(params)
  (l_ours, y_ours), g_ours = jax.value_and_grad(lambda p: loss(ours, p), has_aux=True)(params)
  # float32 sums of 8 and 7 terms in another order: a few ulps of the outputs' scale
  # (bitwise equal on the AMD EPYC it was written on; other CPUs' kernels may round apart).
  y_scale = float(jnp.max(jnp.abs(y_ref)))
  np.testing.assert_allclose(y_ours, y_ref, rtol=0, atol=1e-5 * y_scale)
  assert abs(float(l_ours - l_ref)) < 1e-5 * y_ref.size * y_scale
  # Against the largest gradient entry (measured: 6e-8 of it): the key bias's gradient is
  # zero in exact arithmetic (softmax ignores a shift shared by a query's logits), so its
  # own scale is rounding.
  scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(g_ref))
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)
  if dropout_rate:  # the dropout draws are flax's: outputs differ from the deterministic ones
    deterministic = _pair()[1].apply(params, x, mask=mask)
    assert float(jnp.max(jnp.abs(deterministic - y_ours))) > 1e-2
