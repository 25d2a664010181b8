"""Optimizers: schedule shape, decay masks, clipping, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax.core import errors
from ssl_jax.training import optim


def test_schedule_warmup_then_cosine():
  config = optim.default_config(learning_rate=0.4, lr_scaling="linear", warmup_steps=10)
  schedule = optim.make_schedule(config, total_steps=110, global_batch_size=512)
  peak = 0.4 * 512 / 256
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), peak * 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), peak, rtol=1e-6)
  # Halfway through the cosine part: (1 + cos(pi/2)) / 2 = 0.5 of the peak.
  np.testing.assert_allclose(float(schedule(60)), peak * 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-7)


def test_sqrt_scaling():
  config = optim.default_config(learning_rate=0.1, lr_scaling="sqrt")
  assert optim.peak_learning_rate(config, 1024) == pytest.approx(0.2)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_weight_decay_skips_biases_and_norms(name):
  """With zero gradients, only decayed (>=2-D) parameters move."""
  params = {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,)), "scale": jnp.ones((4,))}
  config = optim.default_config(name=name, learning_rate=0.1, lr_scaling="none", weight_decay=0.5)
  tx, _ = optim.make_optimizer(config, total_steps=10, global_batch_size=256)
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  params_after = params
  for _ in range(2):  # no warm-up: the first step already uses the peak lr
    updates, state = tx.update(zeros, state, params_after)
    params_after = optax.apply_updates(params_after, updates)
  assert np.all(np.asarray(params_after["kernel"]) < 1.0)
  np.testing.assert_array_equal(params_after["bias"], params["bias"])
  np.testing.assert_array_equal(params_after["scale"], params["scale"])


def test_sgd_step_matches_hand_computation():
  params = {"w": jnp.array([[1.0, -2.0]])}
  grads = {"w": jnp.array([[0.5, 0.25]])}
  config = optim.default_config(name="sgd", learning_rate=0.1, lr_scaling="none",
                                weight_decay=0.01, momentum=0.9)
  tx, _ = optim.make_optimizer(config, total_steps=100, global_batch_size=256)
  updates, _ = tx.update(grads, tx.init(params), params)
  # First step: velocity = g + wd * w; w' = w - lr(0) * velocity, lr(0) = cosine at step 0 = peak.
  expected = np.array([[1.0, -2.0]]) - 0.1 * (np.array([[0.5, 0.25]]) + 0.01 * np.array([[1.0, -2.0]]))
  np.testing.assert_allclose(np.asarray(optax.apply_updates(params, updates)["w"]), expected, rtol=1e-6)


def test_gradient_clipping():
  params = {"w": jnp.zeros((2,))}
  config = optim.default_config(name="sgd", learning_rate=1.0, lr_scaling="none", weight_decay=0.0,
                                momentum=0.0, grad_clip_norm=1.0)
  tx, _ = optim.make_optimizer(config, total_steps=100, global_batch_size=256)
  updates, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]), [-0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("field, value, match", [
    ("name", "adagrad", "optimizer.name='adagrad'"),
    ("lr_scaling", "cubic", "lr_scaling='cubic'"),
    ("warmup_steps", 100, "warmup_steps=100"),
    ("weight_decay", -1.0, "weight_decay=-1.0"),
])
def test_bad_optimizer_config(field, value, match):
  config = optim.default_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(config, total_steps=50, global_batch_size=256)


def test_parameter_groups_freeze_and_skip_decay():
  import jax.numpy as jnp
  import numpy as np
  import optax
  from ssl_jax.training import optim
  params = {"kernel": jnp.ones((3, 3)), "token": jnp.ones((3, 3)), "head": jnp.ones((3, 3))}
  labels = lambda p: {"kernel": "default", "token": "no_decay", "head": "frozen"}
  config = optim.default_config(name="adamw", learning_rate=0.1, lr_scaling="none",
                                weight_decay=0.5)
  tx, _ = optim.make_optimizer(config, total_steps=10, global_batch_size=256,
                               param_labels=labels)
  state = tx.init(params)
  zero = {k: jnp.zeros_like(v) for k, v in params.items()}
  ones = {k: jnp.ones_like(v) for k, v in params.items()}
  new = params
  for grads in (ones, zero, zero):
    updates, state = tx.update(grads, state, new)
    new = optax.apply_updates(new, updates)
  np.testing.assert_array_equal(new["head"], params["head"])  # frozen: never moves
  # With zero gradients after the first step, only decay and Adam's momentum move a
  # parameter: the decayed kernel ends below the undecayed token by the decay alone.
  assert np.all(np.asarray(new["kernel"]) < np.asarray(new["token"]))
  with pytest.raises(errors.ConfigError, match="param_labels gave"):
    optim.make_optimizer(config, 10, 256, param_labels=lambda p: {k: "nope" for k in p})[0].init(params)


def test_constant_lr_group_skips_the_schedule():
  """A "constant_lr" parameter steps at the peak lr from step 0; a "default" one follows
  the warm-up (lr 0 at step 0) and the cosine: by hand, plain SGD, lr 0.1, warm-up 4."""
  params = {"scheduled": jnp.zeros((2, 2)), "constant": jnp.zeros((2, 2))}
  grads = jax.tree.map(jnp.ones_like, params)
  config = optim.default_config(name="sgd", learning_rate=0.1, lr_scaling="none",
                                weight_decay=0.0, momentum=0.0, warmup_steps=4)
  labels = lambda p: {"scheduled": "default", "constant": "constant_lr"}
  tx, schedule = optim.make_optimizer(config, total_steps=20, global_batch_size=256,
                                      param_labels=labels)
  state = tx.init(params)
  for step in range(6):
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(np.asarray(updates["constant"]), -0.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(updates["scheduled"]), -float(schedule(step)), rtol=1e-6)
  assert float(schedule(0)) == 0.0 and float(schedule(2)) == pytest.approx(0.05)
