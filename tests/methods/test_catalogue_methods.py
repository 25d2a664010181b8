"""SimSiam, Barlow Twins, VICReg and SimDINO as methods: each loss is its paper's formula
(float64 numpy) on the networks' own outputs, the stop-gradient branches get no gradient,
and the method-specific parts (parameter groups, the teacher's EMA, crop shapes) hold."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax.core import errors, parallel
from ssl_jax.methods import simdino, simsiam, vicreg
from ssl_jax.methods.lib import losses
from ssl_jax.training import engine, optim
from test_catalogue_losses import (numpy_barlow, numpy_coding_rate, numpy_negative_cosine,
                                   numpy_simdino_alignment, numpy_vicreg)
import jitted

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
EXAMPLE = {"image": IMAGES[:1], "label": np.zeros((1,), np.int32)}


def setup(name, local_crops=None):
  module = importlib.import_module(f"ssl_jax.methods.{name}")
  config = importlib.import_module(f"experiments.{name}").get_config("fashion_mnist,smoke")
  if local_crops is not None:
    config.views.local_crops.count = local_crops
  params, state = jitted.init(module, config, EXAMPLE)
  views = jax.jit(lambda b, r: module.views(b, r, 0, config))({"image": IMAGES},
                                                              jax.random.PRNGKey(1))
  return module, config, params, state, views


@pytest.fixture(scope="module")
def simsiam_setup():
  return setup("simsiam")


def test_simsiam_loss_is_the_symmetrised_negative_cosine(simsiam_setup):
  _, config, params, state, views = simsiam_setup
  assert views.shape == (16, 24, 24, 1)
  value, _ = simsiam.loss(params, state, views, None, 0, config)
  encoder, predictor = simsiam._networks(config)
  stats = state["batch_stats"]
  (_, z), _ = encoder.apply({"params": params["encoder"], "batch_stats": stats}, views,
                            train=True, mutable=["batch_stats"])
  p, _ = predictor.apply({"params": params["predictor"]}, z, train=True, mutable=["batch_stats"])
  want = 0.5 * (numpy_negative_cosine(p[:8], z[8:]) + numpy_negative_cosine(p[8:], z[:8]))
  np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_simsiam_target_branch_gets_no_gradient(simsiam_setup):
  """The gradient equals that of the loss with the targets z replaced by constants: with
  the stop-gradient missing, the z used as targets would add a second path."""
  _, config, params, state, views = simsiam_setup
  encoder, predictor = simsiam._networks(config)
  stats = state["batch_stats"]

  def projections(p):
    (_, z), _ = encoder.apply({"params": p["encoder"], "batch_stats": stats}, views,
                              train=True, mutable=["batch_stats"])
    return z

  constant_z = np.asarray(jitted.fast_jit(projections)(params))

  def with_constant_targets(p):
    z = projections(p)
    q, _ = predictor.apply({"params": p["predictor"]}, z, train=True, mutable=["batch_stats"])
    cos = lambda a, b: jnp.mean(jnp.sum(losses.l2_normalize(a) * losses.l2_normalize(b), -1))
    return -0.5 * (cos(q[:8], constant_z[8:]) + cos(q[8:], constant_z[:8]))

  got = jitted.fast_jit(jax.grad(lambda p: simsiam.loss(p, state, views, None, 0, config)[0]))(params)
  want = jitted.fast_jit(jax.grad(with_constant_targets))(params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-7)


def test_simsiam_predictor_trains_at_a_fixed_learning_rate(simsiam_setup):
  _, config, params, _, _ = simsiam_setup
  labels = simsiam.param_labels(params, config)
  assert set(jax.tree.leaves(labels["predictor"])) == {"constant_lr"}
  assert set(jax.tree.leaves(labels["encoder"])) == {"default"}
  with config.unlocked():
    config.simsiam.fix_predictor_lr = False
  assert set(jax.tree.leaves(simsiam.param_labels(params, config)["predictor"])) == {"default"}


def test_simsiam_predictor_moves_at_step_zero_of_the_warm_up(tiny_data_dir):
  """Through the real train step: at step 0 the warm-up lr is 0, so only the "constant_lr"
  predictor moves."""
  from experiments import simsiam as experiment
  config = experiment.get_config("fashion_mnist,smoke")
  config.data.data_dir = tiny_data_dir
  config.optimizer = optim.default_config(name="sgd", learning_rate=0.1, warmup_steps=2,
                                          weight_decay=0.0)
  mesh = parallel.make_mesh()
  _, init, step = engine.build(config, mesh)
  state = init(jax.random.PRNGKey(0))
  batch = parallel.to_global({"image": np.repeat(IMAGES, 2, axis=0),
                              "label": np.zeros((16,), np.int32)}, mesh)
  before = jax.device_get(state.params)  # the step donates its input state
  new_state, _ = step(state, batch)
  moved = lambda a, b: any(np.any(np.asarray(x) != np.asarray(y))
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert moved(new_state.params["predictor"], before["predictor"])
  assert not moved(new_state.params["encoder"], before["encoder"])


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_barlow_twins_and_vicreg_losses_are_their_papers(name):
  module, config, params, state, views = setup(name)
  value, (metrics, _) = module.loss(params, state, views, None, 0, config)
  (_, z), _ = module.network(config).apply({"params": params, **state}, views, train=True,
                                           mutable=["batch_stats"])
  if name == "barlow_twins":
    want = numpy_barlow(z[:8], z[8:], config.barlow_twins.redundancy_weight)
    assert float(metrics["collapsed_loss"]) == config.barlow_twins.projection_dim
  else:
    want = numpy_vicreg(z[:8], z[8:])[0]
    assert float(metrics["collapsed_loss"]) == pytest.approx(49.5)
  np.testing.assert_allclose(float(value), want, rtol=1e-4)


@pytest.fixture(scope="module")
def simdino_setup():
  return setup("simdino", local_crops=2)  # its Fashion-MNIST recipe turns them off


def test_simdino_views_are_global_and_local_crops(simdino_setup):
  _, config, _, _, (global_crops, local_crops) = simdino_setup
  assert global_crops.shape == (8 * config.views.global_crops.count, 24, 24, 1)
  assert local_crops.shape == (8 * config.views.local_crops.count, 12, 12, 1)


@pytest.mark.parametrize("rate_input", ["student", "student_teacher_mean"])
def test_simdino_loss_is_alignment_minus_gamma_coding_rate(simdino_setup, rate_input):
  _, config, params, state, views = simdino_setup
  config = ml_collections.ConfigDict(config.to_dict())
  config.simdino.coding_rate_input = rate_input
  value, (metrics, _) = simdino.loss(params, state, views, None, 0, config)
  global_crops, local_crops = views
  net = simdino.network(config)
  (_, student), _ = net.apply({"params": params, "batch_stats": state["batch_stats"]},
                              [global_crops, local_crops], train=True, mutable=["batch_stats"])
  (_, teacher), _ = net.apply(state["teacher"], [global_crops], train=True,
                              mutable=["batch_stats"])
  student = np.split(f := np.asarray(student, np.float64), len(f) // 8)
  teacher = np.asarray(teacher, np.float64).reshape(2, 8, -1)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  d, n = config.simdino.bottleneck_dim, 8
  gamma = config.simdino.coding_rate_weight * (d + n) / (d * n)  # the balancing factor
  rated = [unit(s) for s in student[:2]]
  if rate_input == "student_teacher_mean":  # the official code's expa_type=1
    rated = [(z + unit(t)) / 2 for z, t in zip(rated, teacher)]
  rate = np.mean([numpy_coding_rate(z, config.simdino.epsilon) for z in rated])
  want = numpy_simdino_alignment(student, teacher) - gamma * rate
  np.testing.assert_allclose(float(value), want, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["coding_rate_weight"]), gamma, rtol=1e-6)
  collapsed = -gamma * 0.5 * np.log(1 + d / config.simdino.epsilon ** 2)
  np.testing.assert_allclose(float(metrics["collapsed_loss"]), collapsed, rtol=1e-6)


def test_simdino_teacher_gets_no_gradient_and_follows_by_ema(simdino_setup):
  _, config, params, state, views = simdino_setup
  grad_wrt_state = jitted.fast_jit(jax.grad(
      lambda s: simdino.loss(params, s, views, None, 0, config)[0]))(state)
  for leaf in jax.tree.leaves(grad_wrt_state["teacher"]["params"]):
    assert np.all(np.asarray(leaf) == 0)
  online = jax.tree.map(lambda p: p + 1.0, params)
  tau = float(simdino.momentum(0, config))
  assert tau == pytest.approx(config.simdino.base_momentum)
  new_state, metrics = simdino.update(online, state, 0, config)
  assert float(metrics["ema_momentum"]) == pytest.approx(tau)
  for old, new, moved in zip(jax.tree.leaves(state["teacher"]["params"]),
                             jax.tree.leaves(new_state["teacher"]["params"]),
                             jax.tree.leaves(online)):
    want = tau * np.asarray(old) + (1 - tau) * np.asarray(moved)
    np.testing.assert_allclose(np.asarray(new), want, rtol=1e-6, atol=1e-6)


def test_two_view_methods_refuse_other_view_groups():
  from ssl_jax.methods.lib import views
  _, config, _, _, _ = setup("vicreg")
  with config.unlocked():
    config.views.third = views.group(count=1, crop_size=24)
  with pytest.raises(errors.ConfigError, match="VICReg needs two views.*third"):
    vicreg.views({"image": IMAGES}, jax.random.PRNGKey(0), 0, config)
  with config.unlocked():
    del config.views["third"]
    config.views.second.crop_size = 20
  with pytest.raises(errors.ConfigError, match="one crop size"):
    vicreg.views({"image": IMAGES}, jax.random.PRNGKey(0), 0, config)
