"""BYOL against hand computations: the symmetrised loss, the target's EMA and τ schedule,
and that the target never receives a gradient."""
import jax
import numpy as np
import pytest

from experiments import byol as byol_experiment
from ssl_jax.methods import byol
import jitted


@pytest.fixture(scope="module")
def setup():
  config = byol_experiment.get_config("fashion_mnist,smoke")
  example = {"image": np.zeros((1, 28, 28, 1), np.uint8), "label": np.zeros((1,), np.int32)}
  params, state = jitted.init(byol, config, example)
  images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
  views = jax.jit(lambda b, r: byol.views(b, r, 0, config))({"image": images},
                                                           jax.random.PRNGKey(1))
  return config, params, state, views


def numpy_byol(predictions, targets):
  """Grill et al. eq. (2) and its swapped twin: mean 2 - 2 cos over rows, both orders."""
  p, z = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
  cos = lambda a, b: np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  half = len(p) // 2
  return np.mean(2 - 2 * cos(p[:half], z[half:])) + np.mean(2 - 2 * cos(p[half:], z[:half]))


def test_two_asymmetric_views(setup):
  config, _, _, views = setup
  assert views.shape == (16, 24, 24, 1)
  assert config.views.first.solarize_prob == 0.0 and config.views.second.solarize_prob == 0.2


def test_loss_is_the_symmetrised_normalised_mse(setup):
  config, params, state, views = setup
  value, _ = byol.loss(params, state, views, None, 0, config)
  encoder, predictor = byol._networks(config)
  stats = state["batch_stats"]
  (_, projections), _ = encoder.apply({"params": params["encoder"], "batch_stats": stats["encoder"]},
                                      views, train=True, mutable=["batch_stats"])
  predictions, _ = predictor.apply({"params": params["predictor"],
                                    "batch_stats": stats["predictor"]}, projections, train=True,
                                   mutable=["batch_stats"])
  (_, targets), _ = encoder.apply(state["target"], views, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(float(value), numpy_byol(predictions, targets), rtol=1e-5)


def test_target_receives_no_gradient(setup):
  config, params, state, views = setup
  grad_wrt_state = jitted.fast_jit(jax.grad(
      lambda s: byol.loss(params, s, views, None, 0, config)[0]))(state)
  for leaf in jax.tree.leaves(grad_wrt_state["target"]["params"]):
    assert np.all(np.asarray(leaf) == 0)
  grads = jitted.fast_jit(jax.grad(lambda p: byol.loss(p, state, views, None, 0, config)[0]))(params)
  assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads["predictor"]))


def test_tau_schedule_and_ema_by_hand(setup):
  config, params, state, _ = setup
  base, total = config.byol.base_momentum, config.total_steps
  # The Fashion-MNIST recipe holds τ at its base; the paper's cosine rises to 1.
  assert config.byol.final_momentum == base
  assert float(byol.momentum(total // 2, config)) == pytest.approx(base)
  config.byol.final_momentum = 1.0
  assert float(byol.momentum(0, config)) == pytest.approx(base)
  assert float(byol.momentum(total, config)) == pytest.approx(1.0)
  with config.unlocked():
    config.total_steps = 100
  assert float(byol.momentum(50, config)) == pytest.approx(1 - (1 - base) / 2, abs=1e-7)
  # τ_k = 1 - (1 - base)(cos(pi k / K) + 1) / 2 at k = 25.
  expected = 1 - (1 - base) * (np.cos(np.pi * 25 / 100) + 1) / 2
  online = jax.tree.map(lambda p: p + 1.0, params)
  new_state, metrics = byol.update(online, state, 25, config)
  assert float(metrics["ema_momentum"]) == pytest.approx(expected, abs=1e-7)
  old = jax.tree.leaves(state["target"]["params"])
  new = jax.tree.leaves(new_state["target"]["params"])
  moved = jax.tree.leaves(online["encoder"])
  for o, n, m in zip(old, new, moved):
    np.testing.assert_allclose(np.asarray(n), expected * np.asarray(o) + (1 - expected) * np.asarray(m),
                               rtol=1e-6, atol=1e-6)
