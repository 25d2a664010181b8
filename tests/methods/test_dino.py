"""DINO against hand computations: multi-crop views, the teacher seeing only the global
crops and getting no gradient, the centre's EMA, the loss and its teacher-temperature
warm-up (a float64 numpy reference from the paper's Algorithm 1), the last-layer freeze,
and the teacher's EMA. One jitted loss-and-gradient serves every test (one compile)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import dino as dino_experiment
from ssl_jax.core import errors
from ssl_jax.methods import dino
import jitted

OUTPUT_DIM = 64  # K: small, for speed


def small_config(local_count=4):
  config = dino_experiment.get_config("fashion_mnist,smoke")
  config.dino.output_dim = OUTPUT_DIM
  config.views.local_crops.count = local_count  # smoke mode caps it at 2
  config.dino.freeze_last_layer_steps = 100  # smoke mode has none
  # The paper's schedules (the Fashion-MNIST recipe holds them constant): the teacher
  # temperature warmed from 0.04 to 0.07, τ rising to 1.
  config.dino.update(warmup_teacher_temperature=0.04, teacher_temperature=0.07,
                     warmup_teacher_temperature_steps=200, final_momentum=1.0)
  return config


@pytest.fixture(scope="module")
def setup():
  config = small_config()
  example = {"image": np.zeros((1, 28, 28, 1), np.uint8), "label": np.zeros((1,), np.int32)}
  params, state = jitted.init(dino, config, example)
  images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
  views = jax.jit(lambda b, r: dino.views(b, r, 0, config))({"image": images},
                                                           jax.random.PRNGKey(1))

  @jax.jit
  def loss_and_grads(params, state, views, step):
    """Loss, metrics, new state; gradients w.r.t. params and w.r.t. the method state."""
    loss = lambda p, s: dino.loss(p, s, views, None, step, config)
    (value, (metrics, new_state)), grads = jax.value_and_grad(loss, argnums=(0, 1),
                                                              has_aux=True)(params, state)
    return value, metrics, new_state, grads

  @jax.jit
  def logits(params, state, views):
    """Student logits of every crop and teacher logits of the global crops, train mode."""
    global_crops, local_crops = views
    net = dino.network(config)
    (_, (_, student)), _ = net.apply({"params": params, "batch_stats": state["batch_stats"]},
                                   [global_crops, local_crops], train=True,
                                   mutable=["batch_stats"])
    (_, (_, teacher)), _ = net.apply(state["teacher"], [global_crops], train=True,
                                   mutable=["batch_stats"])
    return student, teacher

  return config, params, state, views, loss_and_grads, logits


def numpy_dino(student, teacher, center, num_global, student_temperature, teacher_temperature):
  """Caron et al. 2021 Algorithm 1 over all crop pairs: teacher crop i (global) is the
  target of student crop j != i; cross-entropies are batch means, averaged over pairs.
  student [V*B, K] and teacher [G*B, K] are view-major."""
  student, teacher = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
  batch = teacher.shape[0] // num_global
  def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
  targets = [softmax((teacher[i * batch:(i + 1) * batch] - center) / teacher_temperature)
             for i in range(num_global)]
  total, pairs = 0.0, 0
  for j in range(student.shape[0] // batch):
    log_probs = np.log(softmax(student[j * batch:(j + 1) * batch] / student_temperature))
    for i in range(num_global):
      if i != j:
        total += np.mean(-np.sum(targets[i] * log_probs, axis=1))
        pairs += 1
  return total / pairs


def test_multi_crop_view_shapes(setup):
  config, _, _, (global_crops, local_crops), _, _ = setup
  assert global_crops.shape == (16, 24, 24, 1) and local_crops.shape == (32, 12, 12, 1)
  # No local crops (the paper's 2x224 ablation): the second array is None.
  no_locals = small_config(local_count=0)
  shapes = jax.eval_shape(lambda b, r: dino.views(b, r, 0, no_locals),
                          {"image": jnp.zeros((8, 28, 28, 1), jnp.uint8)}, jax.random.PRNGKey(1))
  assert shapes[0].shape == (16, 24, 24, 1) and shapes[1] is None


def test_view_groups_are_checked():
  config = small_config()
  config.views = ml_collections.ConfigDict({"local_crops": config.views.local_crops})
  with pytest.raises(errors.ConfigError, match="global_crops"):
    dino.network(config)
  config = small_config()
  config.dino.teacher_temperature = 0.0
  with pytest.raises(errors.ConfigError, match="dino.teacher_temperature"):
    dino.network(config)


def test_init_teacher_is_a_copy_and_centre_is_zero(setup):
  _, params, state, _, _, _ = setup
  jax.tree.map(np.testing.assert_array_equal, state["teacher"]["params"], params)
  jax.tree.map(np.testing.assert_array_equal, state["teacher"]["batch_stats"],
               state["batch_stats"])
  assert state["center"].shape == (1, OUTPUT_DIM) and not np.any(state["center"])


def test_teacher_sees_only_global_crops_and_gets_no_gradient(setup):
  _, params, state, (global_crops, local_crops), loss_and_grads, _ = setup
  step = jnp.int32(200)  # past the freeze: every student parameter has a gradient
  value, metrics, new_state, (grads, state_grads) = loss_and_grads(
      params, state, (global_crops, local_crops), step)
  other_value, other_metrics, other_state, _ = loss_and_grads(
      params, state, (global_crops, local_crops[::-1]), step)
  assert float(value) != float(other_value)  # the local crops are student inputs
  np.testing.assert_array_equal(new_state["center"], other_state["center"])
  jax.tree.map(np.testing.assert_array_equal, new_state["teacher"], other_state["teacher"])
  assert float(metrics["teacher_entropy"]) == float(other_metrics["teacher_entropy"])
  for leaf in jax.tree.leaves(state_grads):
    assert not np.any(np.asarray(leaf)), "the method state (teacher, centre) got a gradient"
  assert np.abs(np.asarray(grads["backbone"]["stem_conv"]["kernel"])).max() > 0


def test_centre_update_and_loss_by_hand(setup):
  config, params, state, views, loss_and_grads, logits = setup
  center = np.random.default_rng(1).normal(size=(1, OUTPUT_DIM)).astype(np.float32)
  state = {**state, "center": jnp.asarray(center)}
  value, _, new_state, _ = loss_and_grads(params, state, views, jnp.int32(0))
  student, teacher = logits(params, state, views)
  teacher = np.asarray(teacher, np.float64)
  expected = 0.9 * center + 0.1 * teacher.mean(axis=0, keepdims=True)
  np.testing.assert_allclose(new_state["center"], expected, rtol=1e-5, atol=1e-6)
  reference = numpy_dino(student, teacher, center, 2, 0.1, 0.04)
  np.testing.assert_allclose(float(value), reference, rtol=1e-5)


@pytest.mark.parametrize("step", [0, 50, 150, 200, 500])
def test_teacher_temperature_warm_up(setup, step):
  config, params, state, views, loss_and_grads, logits = setup
  assert config.dino.warmup_teacher_temperature_steps == 200
  temperature = 0.04 + (0.07 - 0.04) * min(step / 200, 1.0)  # linear, then constant
  value, metrics, _, _ = loss_and_grads(params, state, views, jnp.int32(step))
  assert float(metrics["teacher_temperature"]) == pytest.approx(temperature, abs=1e-7)
  student, teacher = logits(params, state, views)
  reference = numpy_dino(student, teacher, np.zeros((1, OUTPUT_DIM)), 2, 0.1, temperature)
  np.testing.assert_allclose(float(value), reference, rtol=1e-5)
  assert float(metrics["log_k"]) == pytest.approx(np.log(OUTPUT_DIM))


def test_last_layer_is_frozen_for_the_first_steps(setup):
  config, params, state, views, loss_and_grads, _ = setup
  freeze_steps = config.dino.freeze_last_layer_steps
  for step, frozen in [(0, True), (freeze_steps - 1, True), (freeze_steps, False)]:
    _, _, _, (grads, _) = loss_and_grads(params, state, views, jnp.int32(step))
    last = np.asarray(grads["head"]["last_layer"]["v"])
    assert (not np.any(last)) == frozen, step
    assert np.abs(np.asarray(grads["head"]["bottleneck"]["kernel"])).max() > 0
    assert np.abs(np.asarray(grads["backbone"]["stem_conv"]["kernel"])).max() > 0


def test_update_moves_the_teacher_by_one_minus_tau():
  config = small_config()
  config.total_steps = 100
  base = config.dino.base_momentum
  tau = 1 - (1 - base) * (np.cos(np.pi * 25 / 100) + 1) / 2  # τ_k, cosine from base to 1
  teacher_params = {"w": jnp.asarray([[1.0, -2.0]]), "b": jnp.asarray([0.5])}
  student = {"w": jnp.asarray([[3.0, 4.0]]), "b": jnp.asarray([-1.0])}
  state = {"batch_stats": {"m": jnp.ones(2)},
           "teacher": {"params": teacher_params, "batch_stats": {"m": jnp.zeros(2)}},
           "center": jnp.full((1, 3), 0.25)}
  new_state, metrics = dino.update(student, state, 25, config)
  assert float(metrics["ema_momentum"]) == pytest.approx(tau, abs=1e-7)
  for name in ("w", "b"):
    np.testing.assert_allclose(
        new_state["teacher"]["params"][name],
        tau * np.asarray(teacher_params[name]) + (1 - tau) * np.asarray(student[name]), rtol=1e-6)
  # Only the params move: the teacher's statistics come from its own forward passes.
  np.testing.assert_array_equal(new_state["teacher"]["batch_stats"]["m"], np.zeros(2))
  np.testing.assert_array_equal(new_state["center"], state["center"])
  assert float(dino.momentum(0, config)) == pytest.approx(base)
  assert float(dino.momentum(100, config)) == pytest.approx(1.0)


def test_a_vit_students_stochastic_depth_draws_on_the_step_rng_and_the_teacher_has_none():
  # DINO's ViT recipes (drop path 0.1): the student's depth is thinned by the step's rng,
  # the teacher's never (the official teacher is built without drop path).
  from ssl_jax.models import vit
  config = small_config(local_count=2)
  config.model = vit.default_config("Ti", patch_size=4, depth=2, width=16, num_heads=2,
                                    drop_path_rate=0.5)
  example = {"image": np.zeros((1, 28, 28, 1), np.uint8), "label": np.zeros((1,), np.int32)}
  params, state = jitted.init(dino, config, example)
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  views = dino.views({"image": images}, jax.random.PRNGKey(1), 0, config)

  @jax.jit
  def outputs(rng):
    global_crops, local_crops = views
    (_, (_, student)), _ = dino.network(config).apply(
        {"params": params, "batch_stats": state["batch_stats"]}, [global_crops, local_crops],
        train=True, mutable=["batch_stats"], rngs={"dropout": rng})
    (_, (_, teacher)), _ = dino.network(config, for_teacher=True).apply(
        state["teacher"], [global_crops], train=True, mutable=["batch_stats"])
    loss, _ = dino.loss(params, state, views, rng, 0, config)
    return student, teacher, loss

  student_a, teacher_a, loss_a = outputs(jax.random.PRNGKey(2))
  student_b, teacher_b, loss_b = outputs(jax.random.PRNGKey(3))
  assert np.abs(np.asarray(student_a) - np.asarray(student_b)).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(teacher_a), np.asarray(teacher_b))
  assert float(loss_a) != float(loss_b)
  # Evaluation mode draws nothing: the same features for any rng.
  features = lambda: dino.network(config).apply(
      {"params": params, "batch_stats": state["batch_stats"]}, [views[0]], train=False)[1][1]
  np.testing.assert_array_equal(np.asarray(features()), np.asarray(features()))


def test_a_drop_path_rate_is_refused_for_a_method_that_cannot_apply_it():
  from experiments import simclr
  from ssl_jax import train
  from ssl_jax.models import vit
  config = simclr.get_config("fashion_mnist,smoke")
  config.model = vit.default_config("Ti", patch_size=4, drop_path_rate=0.1)
  with pytest.raises(errors.ConfigError, match="simclr does not apply stochastic depth"):
    train.check(config)


def test_the_teacher_is_the_primary_evaluated_and_exported_network(setup):
  # The official code evaluates and exports the teacher (--checkpoint_key teacher); the
  # student's features come second. A teacher made to differ shows which is which.
  from ssl_jax import models
  config, params, state, views, _, _ = setup
  teacher_params = jax.tree.map(lambda p: p * 0.5, state["teacher"]["params"])
  state = {**state, "teacher": {**state["teacher"], "params": teacher_params}}
  images = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  features = dino.encode(params, state, {"image": images}, config)
  assert list(features) == ["teacher", "student"]
  teacher_variables = {"params": teacher_params["backbone"],
                       "batch_stats": state["teacher"]["batch_stats"]["backbone"]}
  expected = models.encode_images(teacher_variables, images, config)
  np.testing.assert_array_equal(np.asarray(features["teacher"]), np.asarray(expected))
  assert np.abs(np.asarray(features["teacher"]) - np.asarray(features["student"])).max() > 1e-3
  exported = dino.backbone(params, state, config)
  np.testing.assert_array_equal(np.asarray(models.encode_images(exported, images, config)),
                                np.asarray(expected))
