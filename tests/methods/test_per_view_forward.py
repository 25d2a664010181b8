"""One forward per view (methods/lib/forward.py, the `per_view_forward` field of the
two-view methods): each view normalised by its own batch statistics and the running
averages updated once per view, in order, as the official code's one call per view does;
checked against float64 numpy, end to end for Barlow Twins, and wired into every method
that has the field."""
import importlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from ssl_jax.methods.lib import forward
from test_catalogue_losses import numpy_barlow
import jitted

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
EXAMPLE = {"image": IMAGES[:1], "label": np.zeros((1,), np.int32)}
MOMENTUM, EPS = 0.9, 1e-5


class DenseBatchNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(3)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=EPS)(x)


def numpy_batch_norm(h, scale, bias):
  mean, var = h.mean(0), h.var(0)
  return (h - mean) / np.sqrt(var + EPS) * scale + bias, mean, var


def test_each_view_is_normalised_alone_and_the_running_averages_update_in_view_order():
  x = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
  module = DenseBatchNorm()
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  # Running averages away from their initial 0 and 1, so that the order of updates shows.
  stats = jax.tree.map(lambda v: v + 0.5, variables["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": stats}
  kernel = np.float64(variables["params"]["Dense_0"]["kernel"])
  dense_bias = np.float64(variables["params"]["Dense_0"]["bias"])
  bn = variables["params"]["BatchNorm_0"]
  scale, bias = np.float64(bn["scale"]), np.float64(bn["bias"])
  h = np.float64(x) @ kernel + dense_bias

  out, updates = forward.apply(module, variables, x, 2, True, train=True)
  mean, var = np.float64(stats["BatchNorm_0"]["mean"]), np.float64(stats["BatchNorm_0"]["var"])
  want = []
  for block in (h[:5], h[5:]):
    y, block_mean, block_var = numpy_batch_norm(block, scale, bias)
    want.append(y)
    mean = MOMENTUM * mean + (1 - MOMENTUM) * block_mean
    var = MOMENTUM * var + (1 - MOMENTUM) * block_var  # flax keeps the biased variance
  np.testing.assert_allclose(out, np.concatenate(want), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["BatchNorm_0"]["mean"], mean, rtol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["BatchNorm_0"]["var"], var, rtol=1e-5)

  joint, joint_updates = forward.apply(module, variables, x, 2, False, train=True)
  y, _, _ = numpy_batch_norm(h, scale, bias)
  np.testing.assert_allclose(joint, y, rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(joint) - np.asarray(out)).max() > 1e-2


def test_blocks_must_be_equal():
  module = DenseBatchNorm()
  x = np.zeros((9, 4), np.float32)
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  with pytest.raises(ValueError, match="9 views do not split into 2"):
    forward.apply(module, variables, x, 2, True, train=True)


def _setup(name, per_view):
  module = importlib.import_module(f"ssl_jax.methods.{name}")
  config = importlib.import_module(f"experiments.{name}").get_config("fashion_mnist,smoke")
  config[name].per_view_forward = per_view
  params, state = jitted.init(module, config, EXAMPLE)
  views = jax.jit(lambda b, r: module.views(b, r, 0, config))({"image": IMAGES},
                                                              jax.random.PRNGKey(1))
  return module, config, params, state, views


def test_barlow_twins_per_view_is_the_loss_of_two_separate_forwards():
  module, config, params, state, views = _setup("barlow_twins", True)
  value, (_, new_state) = module.loss(params, state, views, None, 0, config)
  network = module.network(config)
  (_, z1), first = network.apply({"params": params, **state}, views[:8], train=True,
                                 mutable=["batch_stats"])
  (_, z2), second = network.apply({"params": params, **first}, views[8:], train=True,
                                  mutable=["batch_stats"])
  want = numpy_barlow(np.float64(z1), np.float64(z2), config.barlow_twins.redundancy_weight)
  np.testing.assert_allclose(float(value), want, rtol=1e-4)
  for got, expected in zip(jax.tree.leaves(new_state), jax.tree.leaves(second)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["byol", "moco", "simsiam", "barlow_twins", "vicreg"])
def test_the_field_reaches_the_forward(name):
  """The network's BatchNorm running means after the step: one update with the mean over
  both views, 0.9 m + 0.1 (mu_1 + mu_2) / 2, against two in turn, 0.81 m + 0.09 mu_1 +
  0.1 mu_2. From the initial m = 0 the second is about twice the first: the field is read."""
  module, config, params, state, views = _setup(name, False)
  means = []
  for per_view in (False, True):
    config[name].per_view_forward = per_view
    _, (_, new_state) = jax.jit(
        lambda p, s, v: module.loss(p, s, v, jax.random.PRNGKey(2), 0, config))(params, state, views)
    leaves = jax.tree_util.tree_leaves_with_path(new_state["batch_stats"])
    means.append({jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves
                  if jax.tree_util.keystr(k).endswith("['mean']")})
  joint, per_view = means
  assert joint and set(joint) == set(per_view)
  ratios = [np.abs(per_view[k]).sum() / np.abs(joint[k]).sum() for k in joint if np.abs(joint[k]).sum()]
  assert ratios and 1.5 < np.median(ratios) < 2.5, ratios
