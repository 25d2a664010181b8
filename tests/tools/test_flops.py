"""ssl_jax/tools/flops.py: matmul and convolution FLOPs counted from the jaxpr, against hand
counts (2 x multiply-adds), through jit, grad, scan and remat; the device peak table."""
import jax
import jax.numpy as jnp
import pytest

from ssl_jax.tools import flops

X, W = jnp.ones((4, 16)), jnp.ones((16, 8))
MATMUL = 2 * 4 * 16 * 8                 # [4,16] @ [16,8]
CONV = 2 * (2 * 5 * 5 * 8) * (3 * 3 * 4)  # 8 output maps of 2x5x5 from 3x3 windows of 4 maps


def matmul(x, w):
  return jnp.sum(x @ w)


def conv(kernel, images):
  return jnp.sum(jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")))


def test_matmul_and_its_gradient():
  assert flops.model_flops(matmul, X, W) == MATMUL
  # The backward pass multiplies twice more (dx = dy w^T, dw = x^T dy).
  assert flops.model_flops(jax.grad(matmul, argnums=(0, 1)), X, W) == 3 * MATMUL
  assert flops.model_flops(jax.jit(jax.grad(matmul, argnums=(0, 1))), X, W) == 3 * MATMUL


def test_convolution_and_its_gradient():
  kernel, images = jnp.ones((3, 3, 4, 8)), jnp.ones((2, 5, 5, 4))
  assert flops.model_flops(conv, kernel, images) == CONV
  assert flops.model_flops(jax.grad(conv, argnums=(0, 1)), kernel, images) == 3 * CONV


def test_scan_counts_every_iteration_and_remat_its_recomputation():
  square = jnp.ones((16, 16))

  def repeated(x, w):
    return jnp.sum(jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0])
  assert flops.model_flops(repeated, X, square) == 5 * 2 * 4 * 16 * 16
  layer = lambda x, w: jnp.tanh(x @ w)
  twice = lambda x, w: jnp.sum(layer(layer(x, w), w))
  plain = flops.model_flops(jax.grad(twice, argnums=1), X, square)
  rematted = jax.checkpoint(layer, policy=jax.checkpoint_policies.nothing_saveable)
  again = flops.model_flops(jax.grad(lambda x, w: jnp.sum(rematted(rematted(x, w), w)),
                                     argnums=1), X, square)
  assert again == plain + 2 * (2 * 4 * 16 * 16)  # each layer's forward matmul once more


@pytest.mark.parametrize("kind, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12), ("NVIDIA H100 80GB HBM3", "float32", 494.7e12),
    ("NVIDIA H200", "bfloat16", 989.4e12), ("NVIDIA A100-SXM4-80GB", "float32", 156e12),
    ("TPU v4", "bfloat16", 275e12), ("TPU v5 lite", "bfloat16", 197e12), ("TPU v5", "float32", 459e12),
    ("TPU v6 lite", "float32", 918e12)])
def test_device_peaks(kind, dtype, peak):
  got, source = flops.device_peak(kind, dtype)
  assert got == peak and "TFLOP/s" in source


def test_unknown_device_has_no_peak():
  assert flops.device_peak("cpu") is None


def test_a_rematerialised_train_step_counts_the_model_once():
  """MFU's model FLOPs of a remat config are those of the same step without remat: the
  recomputed forward is hardware work, not model work (the plain count includes it)."""
  from experiments import mae
  from ssl_jax.core import parallel
  from ssl_jax.data import modality
  from ssl_jax.training import engine

  def step_of(remat):
    config = mae.get_config("fashion_mnist,smoke")
    config.model.remat = remat
    mesh = parallel.make_mesh(1, jax.devices()[:1])
    example = modality.placeholder_example(config.data)
    _, init, step = engine.build(config, mesh, example)
    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    batch = {key: jax.ShapeDtypeStruct((config.global_batch_size,) + value.shape[1:], value.dtype)
             for key, value in example.items()}
    return config, mesh, example, step, state, batch

  config, mesh, example, step, state, batch = step_of("full")
  rematted = flops.model_flops(step, state, batch)
  counted = flops.train_step_model_flops(config, mesh, step, state, batch, example)
  _, _, _, plain_step, plain_state, _ = step_of("none")
  plain = flops.model_flops(plain_step, plain_state, batch)
  assert counted == plain
  # Full remat recomputes each encoder block's forward (the smoke ViT's other work,
  # decoder and patch embedding, is not rematerialised): the plain count is larger.
  assert rematted > 1.01 * plain
