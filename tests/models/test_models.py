"""Tests for ssl_jax.models: ResNet shapes/params/BN semantics, the fast conv, MLP heads."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from ssl_jax.core import errors
from ssl_jax.models import conv as conv_lib, heads, onednn, resnet


def normal(shape, seed=0, scale=1.0, shift=0.0):
  """numpy-drawn test inputs: jax.random would compile a threefry kernel per shape."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale + shift,
                     jnp.float32)


def count_params(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def abstract_init(model, input_shape):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(input_shape),
                                           train=False))


# ----------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("small_image_stem", [True, False])
def test_output_shapes(depth, small_image_stem):
  config = ml_collections.ConfigDict(dict(depth=depth, width_multiplier=1 / 16,
                                          small_image_stem=small_image_stem))
  model = resnet.build(config)
  expected_dim = (4 * 8) * (4 if depth == 50 else 1)      # base width 4 channels
  assert model.feature_dim == expected_dim
  assert resnet.feature_dim(1 / 16, depth == 50) == expected_dim
  variables = abstract_init(model, (2, 32, 32, 3))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((3, 32, 32, 3)), train=False),
                       variables)
  assert out.shape == (3, expected_dim) and out.dtype == jnp.float32


def test_forward_runs_and_train_mode_returns_batch_stats():
  model = resnet.ResNet((1, 1), bottleneck=False, width_multiplier=1 / 16,
                        small_image_stem=True)
  x = normal((4, 8, 8, 1))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, train=True))(x)

  @jax.jit
  def run(variables, x):
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return train_out, updates, model.apply(variables, x, train=False)

  out, updates, eval_out = run(variables, x)
  assert out.shape == (4, 8) and bool(jnp.all(jnp.isfinite(out)))
  assert set(updates) == {"batch_stats"}
  assert eval_out.shape == (4, 8)


def test_feature_dim_full_width():
  assert resnet.feature_dim(1.0, False) == 512
  assert resnet.feature_dim(1.0, True) == 2048
  assert resnet.feature_dim(0.5, False) == 256
  assert resnet.feature_dim(0.001, False) == 8      # channels never drop below 1 * 2**3


# ----------------------------------------------------------------------- param count

def test_resnet18_small_stem_param_count_matches_torchvision_cifar_variant():
  # torchvision resnet18 with conv1 replaced by a 3x3 stride-1 conv and no fc, counted by
  # hand: conv weights + BN (gamma, beta) per BN layer.
  def conv(cin, cout, k):
    return cin * cout * k * k

  def bn(c):
    return 2 * c

  stem = conv(3, 64, 3) + bn(64)
  count = stem
  cin = 64
  for cout in (64, 128, 256, 512):
    for block in range(2):
      count += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
      if cin != cout:   # first block of stages 2-4: 1x1 projection shortcut
        count += conv(cin, cout, 1) + bn(cout)
      cin = cout
  assert count == 11_168_832       # torchvision: 11,689,512 - fc 513,000 - 7x7 stem 7,680
  model = resnet.build(ml_collections.ConfigDict(
      dict(depth=18, width_multiplier=1.0, small_image_stem=True)))
  variables = abstract_init(model, (1, 32, 32, 3))
  assert count_params(variables["params"]) == count


def test_init_follows_torchvision():
  model = resnet.ResNet((1, 1, 1, 1), bottleneck=False, width_multiplier=0.25,
                        small_image_stem=True, zero_init_residual=True)
  params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)),
                                      train=False))()["params"]
  kernel = np.asarray(params["stage4_block1"]["conv2"]["kernel"])      # 3x3x128x128
  assert kernel.shape == (3, 3, 128, 128)
  std = math.sqrt(2.0 / (9 * 128))                                  # fan_out = 9 * 128
  np.testing.assert_allclose(kernel.std(), std, rtol=0.02)
  # untruncated normal: ~1.2% of draws lie beyond 2.5 std (a truncated one has none)
  assert np.mean(np.abs(kernel) > 2.5 * std) > 0.008
  block = params["stage2_block1"]
  assert bool(jnp.all(block["bn2"]["scale"] == 0))        # zero_init_residual
  assert bool(jnp.all(block["bn1"]["scale"] == 1))
  assert bool(jnp.all(block["proj_bn"]["scale"] == 1))
  assert bool(jnp.all(block["bn1"]["bias"] == 0))


def test_bad_depth_and_impl_give_clear_errors():
  with pytest.raises(errors.ConfigError, match=r"model.depth=20.*\[10, 18, 34, 50\]"):
    resnet.build(ml_collections.ConfigDict(dict(depth=20, width_multiplier=1.0,
                                                small_image_stem=True)))
  with pytest.raises(errors.ConfigError, match="model.conv_impl='fancy'"):
    conv_lib.resolve_impl("fancy")


def test_auto_impl_depends_on_backend_and_device_count():
  on_cpu = "onednn" if onednn.available() else "fast"
  with conv_lib.target_backend("cpu", 1):
    assert conv_lib.resolve_impl("auto") == on_cpu
  with conv_lib.target_backend("cpu", 2):       # an FFI call has no partitioning rule
    assert conv_lib.resolve_impl("auto") == "fast"
  for platform in ("tpu", "gpu"):
    with conv_lib.target_backend(platform, 1):
      assert conv_lib.resolve_impl("auto") == "xla"


# ------------------------------------------------------------------------ fast conv

CONV_CASES = [
    # (spatial, cin, cout, kernel, stride, padding)
    (8, 3, 5, 3, 1, "SAME"),
    (8, 4, 6, 3, 2, "SAME"),
    (7, 4, 6, 3, 2, "SAME"),
    (8, 4, 6, 3, 1, ((1, 1), (1, 1))),
    (9, 4, 6, 3, 2, ((1, 1), (1, 1))),
    (8, 4, 6, 3, 2, ((0, 1), (2, 0))),
    (8, 4, 6, 1, 1, "SAME"),
    (8, 4, 6, 1, 2, "VALID"),
    (7, 4, 6, 1, 2, ((0, 0), (0, 0))),
    (11, 3, 4, 7, 2, ((3, 3), (3, 3))),
    (2, 4, 6, 3, 1, "SAME"),             # tiny outputs: the im2col branch of "fast"
    (4, 4, 6, 3, 2, "SAME"),
    (1, 4, 6, 3, 1, "SAME"),
]


@pytest.mark.parametrize("impl", ["im2col", "fast", "onednn"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_matches_lax_in_value_and_gradients(impl, case):
  if impl == "onednn" and not onednn.available():
    pytest.skip(f"oneDNN convolutions unavailable: {onednn.unavailable_reason()}")
  spatial, cin, cout, k, stride, padding = case
  seed = spatial * 100 + k * 10 + stride
  x = normal((2, spatial, spatial, cin), seed)
  kernel = normal((k, k, cin, cout), seed + 1)

  def reference(x, kernel):
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)

  def fast(x, kernel):
    return conv_lib.conv2d(x, kernel, (stride, stride), padding, impl=impl)

  out_shape = jax.eval_shape(reference, x, kernel).shape
  cotangent = normal(out_shape, seed + 2)

  @jax.jit
  def values_and_grads(x, kernel):
    results = []
    for fn in (fast, reference):
      y, vjp = jax.vjp(fn, x, kernel)
      results.append((y, *vjp(cotangent)))
    return results

  got, want = values_and_grads(x, kernel)
  for g, w in zip(got, want):          # output, input gradient, kernel gradient
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_fast_conv_routes_tiny_outputs_to_im2col(monkeypatch):
  calls = []
  original = conv_lib._im2col_conv
  monkeypatch.setattr(conv_lib, "_im2col_conv", lambda *a: calls.append(a[0].shape) or original(*a))
  kernel = jnp.ones((3, 3, 4, 4))
  conv_lib.conv2d(jnp.ones((1, 2, 2, 4)), kernel, impl="fast")        # 2x2 output
  conv_lib.conv2d(jnp.ones((1, 4, 4, 4)), kernel, (2, 2), impl="fast")  # 2x2 output
  assert len(calls) == 2
  conv_lib.conv2d(jnp.ones((1, 3, 3, 4)), kernel, impl="fast")        # 3x3: XLA's conv
  conv_lib.conv2d(jnp.ones((1, 2, 2, 4)), jnp.ones((1, 1, 4, 4)), impl="fast")  # 1x1 kernel
  assert len(calls) == 2


def test_fast_conv_gradient_outside_jit():
  # the custom_vjp (strided) path, differentiated eagerly rather than under jit
  x = normal((1, 6, 6, 2))
  kernel = normal((3, 3, 2, 3), seed=1)
  value = lambda w: jnp.sum(conv_lib.conv2d(x, w, (2, 2), impl="fast") ** 2)
  reference = lambda w: jnp.sum(conv_lib.conv2d(x, w, (2, 2), impl="xla") ** 2)
  np.testing.assert_allclose(jax.grad(value)(kernel), jax.grad(reference)(kernel),
                             rtol=1e-4, atol=1e-4)


def test_compiler_options_keep_convolutions_off_ynnpack():
  options = conv_lib.compiler_options()
  if jax.default_backend() != "cpu":
    assert options == {}
    return
  x = normal((64, 16, 16, 32))
  kernel = normal((3, 3, 32, 32), seed=1)
  fn = lambda x, w: conv_lib.conv2d(x, w, impl="xla")
  compiled = jax.jit(fn, compiler_options=options).lower(x, kernel).compile()
  hlo = compiled.as_text()
  assert "convolution(" in hlo and "__ynn_fusion" not in hlo   # a plain (Eigen) conv
  np.testing.assert_allclose(compiled(x, kernel), jax.jit(fn)(x, kernel), rtol=1e-4,
                             atol=1e-3)


# ------------------------------------------------------------------------ BatchNorm

def test_batchnorm_uses_batch_statistics_and_updates_running_stats():
  # One conv + BN + ReLU (no stages): the pre-BN activation is the stem conv output.
  momentum = 0.8
  model = resnet.ResNet((), bottleneck=False, width_multiplier=4 / 64,
                        small_image_stem=True, bn_momentum=momentum)
  x = normal((6, 5, 5, 2), scale=3.0, shift=1.0)
  variables = model.init(jax.random.PRNGKey(1), x, train=True)
  params = jax.tree_util.tree_map(np.asarray, variables["params"])
  params["stem_bn"]["scale"] = np.array([1.0, 2.0, 0.5, 1.5], np.float32)
  params["stem_bn"]["bias"] = np.array([0.0, 0.1, -0.2, 0.3], np.float32)
  variables = {"params": params, "batch_stats": variables["batch_stats"]}

  out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  pre_bn = np.asarray(lax.conv_general_dilated(
      x, params["stem_conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST),
      np.float64)
  mean = pre_bn.mean(axis=(0, 1, 2))
  var = pre_bn.var(axis=(0, 1, 2))                   # biased, as flax uses
  normalized = (pre_bn - mean) / np.sqrt(var + 1e-5)
  expected = np.maximum(normalized * params["stem_bn"]["scale"] + params["stem_bn"]["bias"],
                        0).mean(axis=(1, 2))
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

  stats = updates["batch_stats"]["stem_bn"]
  np.testing.assert_allclose(stats["mean"], (1 - momentum) * mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["var"], momentum * 1.0 + (1 - momentum) * var,
                             rtol=1e-4, atol=1e-5)

  # eval mode normalizes with the running statistics, not the batch's
  eval_out = model.apply({"params": params, "batch_stats": updates["batch_stats"]}, x,
                         train=False)
  running = (pre_bn - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-5)
  expected_eval = np.maximum(running * params["stem_bn"]["scale"]
                             + params["stem_bn"]["bias"], 0).mean(axis=(1, 2))
  np.testing.assert_allclose(eval_out, expected_eval, rtol=1e-4, atol=1e-4)


def test_batchnorm_matches_flax_batchnorm():
  import flax.linen as nn
  x = normal((8, 3, 3, 5), scale=2.0, shift=0.5)
  ours = resnet.BatchNorm(use_running_average=False, momentum=0.7)
  theirs = nn.BatchNorm(use_running_average=False, momentum=0.7, epsilon=1e-5)
  variables = theirs.init(jax.random.PRNGKey(0), x)
  assert (jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x))
          == jax.tree_util.tree_structure(variables))
  params = {"scale": normal((5,), seed=1), "bias": normal((5,), seed=2)}
  stats = {"mean": normal((5,), seed=3), "var": jnp.ones((5,)) * 2}

  @jax.jit
  def run(params, x):
    results = []
    for module in (ours, theirs):
      def loss(params, x):
        y, updates = module.apply({"params": params, "batch_stats": stats}, x,
                                  mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y)), (y, updates)
      (_, (y, updates)), grads = jax.value_and_grad(loss, argnums=(0, 1),
                                                    has_aux=True)(params, x)
      evaluated = module.clone(use_running_average=True).apply(
          {"params": params, "batch_stats": stats}, x)
      results.append((y, updates, grads, evaluated))
    return results

  got, want = run(params, x)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         got, want)


def test_impls_share_parameters_and_agree_on_a_network():
  x = normal((4, 12, 12, 3))
  models = {impl: resnet.ResNet((1, 1), bottleneck=False, width_multiplier=4 / 64,
                                small_image_stem=False, conv_impl=impl)
            for impl in ("xla", "fast") + (("onednn",) if onednn.available() else ())}
  variables = jax.jit(lambda: models["xla"].init(jax.random.PRNGKey(1), x, train=True))()

  @jax.jit
  def values_and_grads(params):
    def loss(params, model):
      out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                           x, train=True, mutable=["batch_stats"])
      return jnp.sum(out ** 2)
    return {impl: jax.value_and_grad(loss)(params, model) for impl, model in models.items()}

  results = values_and_grads(variables["params"])
  ref_value, ref_grad = results.pop("xla")
  for value, grad in results.values():
    np.testing.assert_allclose(value, ref_value, rtol=1e-4)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4), grad, ref_grad)


# ---------------------------------------------------------------------------- heads

def test_mlp_head_simclr_projector():
  head = heads.MLPHead((2048,), 128)
  x = jnp.ones((4, 512))
  variables = head.init(jax.random.PRNGKey(0), x, train=True)
  # 512x2048 (no bias, BN follows) + BN affine 2*2048 + 2048x128 + bias 128
  assert count_params(variables["params"]) == 512 * 2048 + 2 * 2048 + 2048 * 128 + 128
  out, updates = head.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == (4, 128) and "batch_stats" in updates


def test_mlp_head_variants():
  x = normal((5, 16))
  plain = heads.MLPHead((32, 32), 8, use_bn=False)
  variables = plain.init(jax.random.PRNGKey(1), x, train=False)
  assert "batch_stats" not in variables
  assert count_params(variables["params"]) == (16 * 32 + 32) + (32 * 32 + 32) + (32 * 8 + 8)
  assert plain.apply(variables, x, train=False).shape == (5, 8)

  last_bn = heads.MLPHead((32,), 8, last_bn=True)
  variables = last_bn.init(jax.random.PRNGKey(1), x, train=True)
  out, _ = last_bn.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)   # affine-free output BN
  np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-3)


def test_package_sets_the_same_cpu_flag_as_conv():
  import ssl_jax
  from ssl_jax.models import conv
  assert ssl_jax.CPU_XLA_FLAGS == (conv.CPU_XLA_FLAGS,)


def test_the_families_are_the_backbones_and_a_helper_is_refused():
  """Every module of ssl_jax/models is a backbone family except its declared helpers; a
  helper's name as config.model.name is refused like any unknown name."""
  from ssl_jax import models
  from ssl_jax.core.errors import ConfigError
  assert models.families() == ["resnet", "transformer", "vit"]
  with pytest.raises(ConfigError, match="config.model.name='torch_names' does not exist"):
    models.family("torch_names")
