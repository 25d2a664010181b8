"""Tests for ssl_jax.models.onednn: building the library, its fallbacks, what "auto" picks,
and the oneDNN convolution on what the value/gradient tests in test_models.py do not
cover (a sharded batch, other dtypes, empty batches, FLOP counting).

The values and both gradients against lax's convolution at HIGHEST precision are in
tests/models/test_models.py (test_conv_matches_lax_in_value_and_gradients, impl="onednn").
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.core import errors
from ssl_jax.models import conv as conv_lib, onednn
from ssl_jax.tools import flops

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN convolutions unavailable: "
                                         f"{onednn.unavailable_reason()}")


def normal(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
  """onednn as if not yet checked in this process, caching under tmp_path."""
  monkeypatch.setattr(onednn, "_STATE", {"checked": False, "reason": None})
  monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path))
  return tmp_path


def test_without_a_compiler_it_says_why_and_auto_falls_back(fresh_state, monkeypatch, capsys):
  monkeypatch.setattr(onednn, "_compiler", lambda: None)
  assert not onednn.available()
  assert "no C++ compiler" in onednn.unavailable_reason()
  assert "apt-get install g++ libdnnl-dev" in capsys.readouterr().err   # the hint, once
  onednn.available()
  assert capsys.readouterr().err == ""
  with conv_lib.target_backend("cpu", 1):
    assert conv_lib.resolve_impl("auto") == "fast"
  with pytest.raises(errors.ConfigError, match="conv_impl='onednn'.*no C\\+\\+ compiler"):
    conv_lib.resolve_impl("onednn")


def test_without_onednn_headers_it_says_why(fresh_state, monkeypatch):
  monkeypatch.setattr(onednn, "HEADER_DIRS", (str(fresh_state / "nowhere"),))
  with pytest.raises(onednn.Unavailable, match="oneDNN's headers"):
    onednn.build()


def test_opt_out_keeps_xla_convolutions_quietly(fresh_state, monkeypatch, capsys):
  monkeypatch.setenv(onednn.ENV, "0")
  assert onednn.unavailable_reason() == "SSL_JAX_ONEDNN=0"
  assert capsys.readouterr().err == ""
  with conv_lib.target_backend("cpu", 1):
    assert conv_lib.resolve_impl("auto") == "fast"


def test_a_library_that_does_not_load_is_refused(fresh_state):
  path = onednn.library_path()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as not_a_library:
    not_a_library.write("not an ELF file")
  assert not onednn.available()
  assert "cannot load" in onednn.unavailable_reason()


def test_onednn_by_name_is_refused_off_cpu():
  with conv_lib.target_backend("tpu", 4):
    with pytest.raises(errors.ConfigError, match="conv_impl='onednn' runs on CPU only, not tpu"):
      conv_lib.resolve_impl("onednn")


@needs_onednn
def test_the_command_builds_from_source_into_the_cache(tmp_path):
  env = dict(os.environ, **{onednn.CACHE_ENV: str(tmp_path)})
  result = subprocess.run([sys.executable, "-m", "ssl_jax.models.onednn"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  built = [name for name in os.listdir(tmp_path) if name.endswith(".so")]
  assert len(built) == 1 and built[0].startswith("onednn_conv-")     # no partial file left
  assert str(tmp_path / built[0]) in result.stdout


@needs_onednn
def test_kernel_gradient_and_input_gradient_by_hand():
  # A 1x1 convolution is a matmul per pixel: y = x @ K, dK = x^T dy, dx = dy @ K^T.
  x = normal((3, 4, 5, 6))
  kernel = normal((1, 1, 6, 7), seed=1)
  dy = normal((3, 4, 5, 7), seed=2)
  y, vjp = jax.vjp(lambda a, b: onednn.conv(a, b, (1, 1), ((0, 0), (0, 0))), x, kernel)
  dx, dkernel = vjp(dy)
  x64, k64, dy64 = (np.asarray(a, np.float64) for a in (x, kernel[0, 0], dy))
  np.testing.assert_allclose(y, x64 @ k64, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dy64 @ k64.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dkernel[0, 0], np.einsum("nhwc,nhwo->co", x64, dy64),
                             rtol=1e-5, atol=1e-4)


@needs_onednn
def test_other_dtypes_take_xla_convolutions():
  x = normal((2, 6, 6, 3)).astype(jnp.bfloat16)
  kernel = normal((3, 3, 3, 4), seed=1).astype(jnp.bfloat16)
  fn = lambda a, b: conv_lib.conv2d(a, b, impl="onednn")
  assert "ffi_call" not in str(jax.make_jaxpr(fn)(x, kernel))
  assert "ffi_call" in str(jax.make_jaxpr(fn)(x.astype(jnp.float32), kernel.astype(jnp.float32)))
  np.testing.assert_allclose(np.asarray(fn(x, kernel), np.float32),
                             np.asarray(conv_lib.conv2d(x, kernel, impl="fast"), np.float32))


@needs_onednn
def test_an_empty_batch_gives_empty_outputs_and_a_zero_kernel_gradient():
  x = jnp.zeros((0, 5, 5, 3))
  kernel = normal((3, 3, 3, 4))
  y, vjp = jax.vjp(lambda a, b: onednn.conv(a, b, (1, 1), ((1, 1), (1, 1))), x, kernel)
  dx, dkernel = vjp(jnp.zeros(y.shape))
  assert y.shape == (0, 5, 5, 4) and dx.shape == x.shape
  np.testing.assert_array_equal(dkernel, np.zeros(kernel.shape))


@needs_onednn
def test_model_flops_count_the_three_calls_by_hand():
  n, h, w, c, o, k = 2, 8, 8, 3, 5, 3
  x, kernel = normal((n, h, w, c)), normal((k, k, c, o), seed=1)
  loss = lambda a, b: jnp.sum(onednn.conv(a, b, (2, 2), ((1, 1), (1, 1))) ** 2)
  forward = 2.0 * n * 4 * 4 * o * k * k * c      # a 4x4 output
  assert flops.model_flops(loss, x, kernel) == forward
  assert flops.model_flops(jax.grad(loss, argnums=(0, 1)), x, kernel) == 3 * forward


SHARDED = """
import ssl_jax, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ssl_jax.models import conv
assert jax.device_count() == 4
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 6, 6, 3)), jnp.float32)
k = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 3, 5)), jnp.float32)
loss = lambda a, b, impl: jnp.sum(jnp.sin(conv.conv2d(a, b, (2, 2), impl=impl)))
grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
sharded = grad(jax.device_put(x, NamedSharding(mesh, P("data"))), k, "onednn")
on_one = grad(x, k, "onednn")                 # uncommitted: device 0 alone
reference = grad(x, k, "xla")
for a, b, r in zip(jax.tree.leaves(sharded), jax.tree.leaves(on_one), jax.tree.leaves(reference)):
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-4, atol=1e-4)
with conv.target_backend("cpu", 4):
  assert conv.resolve_impl("auto") == "fast"
print("ok")
"""


@needs_onednn
def test_a_batch_sharded_over_devices_gives_the_one_device_result():
  # No partitioning rule: XLA gathers the operands, so the result is the whole batch's.
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                    " --xla_force_host_platform_device_count=4").strip())
  result = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
