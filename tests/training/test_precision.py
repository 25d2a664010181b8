"""config.precision: bfloat16 matmuls and convolutions with float32 parameters, optimizer
state and statistics, and losses close to the float32 run's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.core import errors, parallel
from ssl_jax.training import engine


def test_with_precision_sets_every_network_and_leaves_the_run_config():
  from experiments import clip
  config = clip.get_config("fashion_mnist_captions,smoke")
  assert engine.with_precision(config) is config  # float32: nothing to change
  config.precision = "bfloat16"
  computed = engine.with_precision(config)
  assert computed.model.dtype == computed.text_model.dtype == "bfloat16"
  assert config.model.dtype == config.text_model.dtype == "float32"
  config.precision = "float16"
  with pytest.raises(errors.ConfigError, match="precision='float16'; expected one of float32, bfloat16"):
    engine.with_precision(config)


def _steps(config, batch, precision, count=3):
  config.precision = precision
  mesh = parallel.make_mesh()
  _, init, step = engine.build(config, mesh, example={k: v[:1] for k, v in batch.items()})
  state, losses = init(jax.random.PRNGKey(0)), []
  for _ in range(count):
    state, metrics = step(state, parallel.to_global(batch, mesh))
    losses.append(float(metrics["loss"]))
  return parallel.to_host(state), np.array(losses)


@pytest.mark.parametrize("experiment", ["simclr", "mae"])
def test_bfloat16_trains_close_to_float32_with_float32_state(experiment):
  import importlib
  config = importlib.import_module(f"experiments.{experiment}").get_config("fashion_mnist,smoke")
  images = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  batch = {"image": images, "label": np.zeros((16,), np.int32)}
  full, full_losses = _steps(config, batch, "float32")
  half, half_losses = _steps(config, batch, "bfloat16")
  # bfloat16 keeps 8 bits of mantissa: after three steps the losses agree to about 1%.
  np.testing.assert_allclose(half_losses, full_losses, rtol=2e-2)
  assert not np.array_equal(half_losses, full_losses)  # it did compute in bfloat16
  for tree in (half.params, half.opt_state, half.method_state):
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert dtypes <= {jnp.dtype(jnp.float32)}, dtypes
