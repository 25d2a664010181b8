"""Gradient accumulation (engine.loss_and_grads with micro-batches): for the methods whose
loss is a mean over examples it equals the full batch, with micro-batches weighted by
their number of loss terms; every other method is refused with a clear error."""
import jax
import numpy as np
import pytest

from experiments import clm as clm_experiment, mae as mae_experiment, mlm as mlm_experiment
from ssl_jax.core import errors, parallel
from ssl_jax.data import text
from ssl_jax.methods import clm, mae, mlm
from ssl_jax.training import engine, optim
from compare import relative_gap
import jitted

VOCAB = 64


def _tokens(batch=8, length=16, seed=0):
  """Texts of different lengths, so micro-batches hold different numbers of loss terms."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, VOCAB, (batch, length)).astype(np.int32)
  for row, end in enumerate(rng.integers(4, length, batch)):
    tokens[row, 0], tokens[row, end - 1], tokens[row, end:] = text.CLS, text.SEP, text.PAD
  return tokens


def _text_config(experiment):
  config = experiment.get_config("fortunes,smoke")
  config.model.vocab_size = config.data.vocab_size = VOCAB
  config.model.max_length = config.data.max_length = 16
  config.model.dropout_rate = 0.0  # a deterministic loss: micro-batches draw their own dropout
  return config


def _setup(name):
  if name == "mae":
    config = mae_experiment.get_config("fashion_mnist,smoke")
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    return mae, config, {"image": images}
  method, experiment = {"mlm": (mlm, mlm_experiment), "clm": (clm, clm_experiment)}[name]
  return method, _text_config(experiment), {"tokens": _tokens()}


@pytest.mark.parametrize("name", ["mae", "mlm", "clm"])
def test_micro_batches_give_the_full_batch_loss_and_gradients(name):
  method, config, batch = _setup(name)
  params, state = jitted.init(method, config, batch)
  views = jitted.views(method, batch, jax.random.PRNGKey(1), 0, config)

  run = jitted.fast_jit(lambda p, v, k=1: engine.loss_and_grads(
      method, p, state, v, jax.random.PRNGKey(2), 0, config, k), static_argnums=2)
  (loss, (metrics, _)), grads = run(params, views, 1)
  # Four strided micro-batches of two examples each.
  (got_loss, (got_metrics, _)), got_grads = run(params, views, 4)
  np.testing.assert_allclose(float(got_loss), float(loss), rtol=1e-5)
  assert relative_gap(got_grads, grads) < 1e-5
  # Means over the loss terms come out exact; batch statistics (a std, a ratio, an
  # exponential of the loss) are averaged over micro-batches, so only near.
  exact = {"mae": "visible_patches", "mlm": "mlm_accuracy", "clm": "next_token_accuracy"}[name]
  np.testing.assert_allclose(float(got_metrics[exact]), float(metrics[exact]), rtol=1e-5)
  if name != "mae":
    # The weighting is what makes it exact: the micro-batches' term counts differ, and
    # their plain mean is measurably not the full batch's gradient.
    micro = [jax.tree.map(lambda v: v[j::2], views) for j in range(2)]
    weights = [float(method.loss_weight(m, config)) for m in micro]
    assert weights[0] != weights[1]
    halves = [run(params, m, 1)[1] for m in micro]
    plain = jax.tree.map(lambda a, b: (a + b) / 2, *halves)
    assert relative_gap(plain, grads) > 1e-3


def test_a_train_step_with_micro_batches_matches_the_full_batch():
  """The jitted step through engine.build: the same change to the parameters either way.
  Plain SGD at its peak rate from the first step, so the change is the gradient times the
  learning rate (AdamW's first step is about lr * sign(g), whose sign flips with rounding
  where a gradient element is near zero; the smoke schedule's warm-up starts at 0)."""
  method, config, batch = _setup("mae")
  mesh = parallel.make_mesh()
  config.global_batch_size = 8
  # A rate large enough that the change dwarfs the float32 spacing of the parameters
  # it is added to (a LayerNorm scale of 1 moves in steps of 1.2e-7).
  config.optimizer = optim.default_config(name="sgd", learning_rate=1e3, lr_scaling="none",
                                          momentum=0.0, weight_decay=0.0, warmup_steps=0)
  changes = []
  for k in (1, 2):
    config.grad_accumulation = k
    _, init, step = engine.build(config, mesh, example={"image": batch["image"][:1]})
    before = parallel.to_host(init(jax.random.PRNGKey(0)).params)
    state, metrics = step(init(jax.random.PRNGKey(0)), parallel.to_global(batch, mesh))
    change = jax.tree.map(lambda new, old: np.float64(new) - np.float64(old),
                          parallel.to_host(state.params), before)
    changes.append((change, float(metrics["loss"])))
  (full, full_loss), (micro, micro_loss) = changes
  np.testing.assert_allclose(micro_loss, full_loss, rtol=1e-5)
  assert max(np.abs(leaf).max() for leaf in jax.tree.leaves(full)) > 0
  assert relative_gap(micro, full) < 1e-5  # as the gradients above


def test_batch_coupled_methods_and_uneven_splits_are_refused():
  from experiments import simclr as simclr_experiment
  from ssl_jax import methods
  config = simclr_experiment.get_config("fashion_mnist,smoke")
  config.grad_accumulation = 2
  with pytest.raises(errors.ConfigError, match="simclr couples the examples.*: clm, mae, mlm"):
    engine.check_accumulation(methods.get("simclr"), config, devices=1)
  config = mae_experiment.get_config("fashion_mnist,smoke")
  config.grad_accumulation = 3
  with pytest.raises(errors.ConfigError, match="multiple of grad_accumulation x devices = 6"):
    engine.check_accumulation(mae, config, devices=2)
  config.grad_accumulation = 0
  with pytest.raises(errors.ConfigError, match="grad_accumulation"):
    engine.check_accumulation(mae, config, devices=1)
