"""Per-block rematerialisation (config.model.remat): the same parameters, loss and
gradients as without it, and fewer values kept for the backward pass."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import remat, resnet, transformer, vit
from compare import relative_gap
import jitted

IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 16, 16, 1)), jnp.float32)
TOKENS = jnp.asarray(np.random.default_rng(1).integers(5, 64, (8, 12)), jnp.int32)


def _vit(policy):
  return vit.ViT(patch_size=4, width=32, depth=3, num_heads=2, remat=policy), IMAGES


def _transformer(policy):
  return transformer.Transformer(vocab_size=64, max_length=12, width=32, depth=3, num_heads=2,
                                 mlp_dim=64, norm="pre", remat=policy), TOKENS


def _resnet(policy):
  return resnet.ResNet(stage_sizes=(1, 1), bottleneck=False, width_multiplier=0.125,
                       small_image_stem=True, remat=policy), IMAGES


@pytest.mark.parametrize("make", [_vit, _transformer, _resnet], ids=["vit", "transformer", "resnet"])
def test_remat_changes_memory_not_results(make):
  results, kept = {}, {}
  for policy in ("none", "full", "dots"):
    model, inputs = make(policy)
    variables = jitted.fast_jit(lambda rng: model.init(rng, inputs, train=False))(jax.random.PRNGKey(0))
    params, state = {"params": variables["params"]}, {k: v for k, v in variables.items() if k != "params"}

    def loss(p):  # BatchNorm (the ResNet) trains on batch statistics and updates its own
      out, updates = model.apply({**p, **state}, inputs, train=True, mutable=list(state))
      return jnp.sum(out ** 2), updates
    results[policy] = jitted.fast_jit(jax.value_and_grad(loss, has_aux=True))(params)
    kept[policy] = remat.residual_bytes(lambda p: loss(p)[0], params)
  (want_loss, want_updates), want_grads = results["none"]
  for policy in ("full", "dots"):
    (got_loss, got_updates), got_grads = results[policy]
    assert jax.tree.structure(got_grads) == jax.tree.structure(want_grads)  # same parameters
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-6)
    for got, want in zip(jax.tree.leaves(got_updates), jax.tree.leaves(want_updates)):
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # running statistics
    # The recomputed forward is fused differently: float32 rounding, no more.
    assert relative_gap(got_grads, want_grads) < 5e-5, policy
  # Only each block's input (full), plus its matmul outputs (dots), against everything.
  assert kept["full"] < kept["dots"] < kept["none"], kept


def test_residual_bytes_counts_what_the_backward_pass_keeps():
  # d/dx sum(sin(x)) = cos(x): the backward pass keeps cos(x), one value per element.
  f = lambda x: jnp.sum(jnp.sin(x))
  assert remat.residual_bytes(f, jnp.ones((4, 16), jnp.float32)) == 4 * 16 * 4
  assert remat.residual_bytes(f, jnp.ones((4, 16), jnp.bfloat16)) == 4 * 16 * 2
  assert remat.residual_bytes(f, jnp.ones((3,), jnp.float32)) == 3 * 4
  # The arguments themselves are not counted: x @ w keeps x and w for its backward pass.
  assert remat.residual_bytes(lambda w, x: jnp.sum(x @ w), jnp.ones((16, 8)), jnp.ones((4, 16))) == 0


def test_unknown_policy_is_an_error():
  with pytest.raises(ValueError, match="remat='some'; expected none, full, dots"):
    remat.wrap(vit.Block, "some", static_argnums=(2,))
