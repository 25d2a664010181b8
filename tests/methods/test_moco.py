"""MoCo v3 against hand computations: Algorithm 1's symmetrised loss in float64 numpy,
the v2-style queue (which keys land where, and that the loss used the old queue), the
momentum encoder's EMA and τ schedule, and that the momentum encoder gets no gradient.

Every jit here compiles with XLA's backend optimisation off: the random init of even the
smoke ResNet takes ~35 s to compile on 2 cores at the default level and ~3 s at 0, and
nothing here measures speed.
"""
import copy
import os
import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import moco as moco_experiment
from ssl_jax.core import errors
from ssl_jax.methods import moco

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
fast_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
EXAMPLE = {"image": np.zeros((1, 28, 28, 1), np.uint8), "label": np.zeros((1,), np.int32)}
IMAGES = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)


QUEUE_SIZE = 24  # 16 keys a step (8 images x 2 views): from row 16 the write wraps


def smoke_config(**moco_overrides):
  config = moco_experiment.get_config("fashion_mnist,smoke")
  for name, value in moco_overrides.items():
    config.moco[name] = value
  return config


def initialise(config, seed=0):
  return fast_jit(lambda rng: moco.init(rng, config, EXAMPLE))(jax.random.PRNGKey(seed))


def queries_and_keys(config, params, state, views):
  """q = predictor(projector(backbone(x))) online and k = projector(backbone(x)) of the
  momentum encoder, both views in one train-mode forward, as [2B, D] (view 1 first)."""
  encoder, predictor = moco._networks(config)

  def forward(params, state, views):
    images = jnp.concatenate(views)
    (_, projections), _ = encoder.apply({"params": params["encoder"],
                                         "batch_stats": state["batch_stats"]},
                                        images, train=True, mutable=["batch_stats"])
    queries, _ = predictor.apply({"params": params["predictor"]}, projections, train=True,
                                 mutable=["batch_stats"])
    (_, keys), _ = encoder.apply(state["target"], images, train=True, mutable=["batch_stats"])
    return queries, keys
  return [np.asarray(x, np.float64) for x in fast_jit(forward)(params, state, views)]


class Setup:
  """One init (with a queue) and one compiled loss per variant, shared by the tests."""

  def __init__(self):
    self.config = smoke_config()
    self.queue_config = smoke_config(queue_size=QUEUE_SIZE)
    self.params, self.queue_state = initialise(self.queue_config)
    # The same network and init without a queue: MoCo v3 proper.
    self.state = {k: v for k, v in self.queue_state.items() if not k.startswith("queue")}
    self.views = fast_jit(lambda b, r: moco.views(b, r, 0, self.config))(
        {"image": IMAGES}, jax.random.PRNGKey(1))
    self.loss = fast_jit(lambda p, s, v: moco.loss(p, s, v, None, 0, self.config))
    self.queue_loss = fast_jit(lambda p, s, v: moco.loss(p, s, v, None, 0, self.queue_config))
    self.queries, self.keys = queries_and_keys(self.config, self.params, self.state, self.views)


@pytest.fixture(scope="module")
def setup():
  return Setup()


def unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def cross_entropy(logits, labels):
  logits = logits - logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -np.mean(log_probs[np.arange(len(labels)), labels])


def numpy_moco_v3(q1, q2, k1, k2, temperature):
  """Algorithm 1: ctr(q, k) = CE(q k^T / T, arange(N)) * 2T on l2-normalised rows;
  loss = ctr(q1, k2) + ctr(q2, k1). Returns (loss, mean top-1 of both directions)."""
  def ctr(q, k):
    logits = unit(q) @ unit(k).T / temperature
    labels = np.arange(len(q))
    return cross_entropy(logits, labels) * 2 * temperature, np.mean(logits.argmax(1) == labels)
  (a, top_a), (b, top_b) = ctr(q1, k2), ctr(q2, k1)
  return a + b, (top_a + top_b) / 2


def numpy_moco_v2(q1, q2, k1, k2, queue, temperature):
  """MoCo v2's InfoNCE, symmetrised: logits [q.k+, q.queue] / T, label 0, no 2T factor."""
  def ctr(q, k):
    q, k = unit(q), unit(k)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ unit(queue).T], 1) / temperature
    return cross_entropy(logits, np.zeros(len(q), int))
  return ctr(q1, k2) + ctr(q2, k1)


def test_views_are_two_asymmetric_groups_of_one(setup):
  assert isinstance(setup.views, tuple)
  assert [v.shape for v in setup.views] == [(8, 24, 24, 1)] * 2
  assert setup.config.views.first.blur_prob == 1.0
  assert setup.config.views.second.solarize_prob == 0.2
  bad = copy.deepcopy(setup.config)
  bad.views.first.count = 2
  with pytest.raises(errors.ConfigError, match="two view groups of count 1"):
    moco.views({"image": IMAGES}, jax.random.PRNGKey(0), 0, bad)


def test_config_checks():
  with pytest.raises(errors.ConfigError, match="moco.temperature"):
    jax.eval_shape(lambda r: moco.init(r, smoke_config(temperature=0.0), EXAMPLE),
                   jax.random.PRNGKey(0))
  with pytest.raises(errors.ConfigError, match="moco.base_momentum"):
    jax.eval_shape(lambda r: moco.init(r, smoke_config(base_momentum=1.5), EXAMPLE),
                   jax.random.PRNGKey(0))
  with pytest.raises(errors.ConfigError, match="has no field"):
    moco.default_config(temprature=0.2)


def test_loss_is_algorithm_1(setup):
  value, (metrics, new_state) = setup.loss(setup.params, setup.state, setup.views)
  q, k = setup.queries, setup.keys
  expected, top1 = numpy_moco_v3(q[:8], q[8:], k[:8], k[8:], setup.config.moco.temperature)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  assert float(metrics["contrastive_top1"]) == pytest.approx(top1)
  assert set(metrics) == {"contrastive_top1", "collapsed_loss", "embedding_std", "effective_rank"}
  assert set(new_state) == {"batch_stats", "target"}
  # Both networks ran in train mode: both sets of statistics moved, the target's params did not.
  state = setup.state
  for old, new in [(state["batch_stats"], new_state["batch_stats"]),
                   (state["target"]["batch_stats"], new_state["target"]["batch_stats"])]:
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
               for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["params"],
               state["target"]["params"])


def test_momentum_encoder_starts_as_the_online_encoder_and_gets_no_gradient(setup):
  params, state = setup.params, setup.state
  jax.tree.map(np.testing.assert_array_equal, state["target"]["params"], params["encoder"])
  jax.tree.map(np.testing.assert_array_equal, state["target"]["batch_stats"],
               state["batch_stats"])

  def loss_of(params, target_params):
    target = {**state["target"], "params": target_params}
    return moco.loss(params, {**state, "target": target}, setup.views, None, 0, setup.config)[0]
  (value, (online_grads, target_grads)) = fast_jit(jax.value_and_grad(loss_of, argnums=(0, 1)))(
      params, state["target"]["params"])
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(target_grads))
  for part in ("encoder", "predictor"):
    assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(online_grads[part]))
  # The keys do come from the target: moving it changes the loss.
  noise = np.random.default_rng(2)
  moved = jax.tree.map(lambda p: p + 0.1 * noise.standard_normal(p.shape).astype(np.float32),
                       state["target"]["params"])
  moved_value, _ = setup.loss(params, {**state, "target": {**state["target"], "params": moved}},
                              setup.views)
  assert abs(float(moved_value) - float(value)) > 1e-3


@pytest.mark.parametrize("step", [0, 5])
def test_update_is_an_ema_with_the_cosine_tau(setup, step):
  config = copy.deepcopy(setup.config)
  config.total_steps = 10
  params, state = setup.params, setup.state
  # Online params one step ahead of a target that is no longer equal to them.
  online = jax.tree.map(lambda p: p + 0.5, params)
  new_state, metrics = fast_jit(lambda p, s, k: moco.update(p, s, k, config))(
      online, state, jnp.int32(step))
  tau = 1 - (1 - 0.99) * (np.cos(np.pi * step / 10) + 1) / 2  # 0.99 at 0, 0.995 half-way
  assert tau == pytest.approx({0: 0.99, 5: 0.995}[step])
  assert float(metrics["ema_momentum"]) == pytest.approx(tau, abs=1e-7)
  jax.tree.map(lambda new, old, on: np.testing.assert_allclose(
      new, tau * np.asarray(old, np.float64) + (1 - tau) * np.asarray(on, np.float64),
      rtol=1e-6, atol=1e-7), new_state["target"]["params"], state["target"]["params"],
               online["encoder"])
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["batch_stats"],
               state["target"]["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, new_state["batch_stats"], state["batch_stats"])


def test_queue_init_is_unit_noise(setup):
  queue = np.asarray(setup.queue_state["queue"])
  assert queue.shape == (QUEUE_SIZE, setup.config.moco.projection_dim)
  assert queue.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(queue, axis=1), 1.0, rtol=1e-5)
  pointer = setup.queue_state["queue_pointer"]
  assert pointer.dtype == jnp.int32 and int(pointer) == 0


@pytest.mark.parametrize("pointer", [0, 16])
def test_queue_loss_uses_the_old_queue_then_enqueues_the_batch(setup, pointer):
  old_queue = unit(np.random.default_rng(3).standard_normal(
      (QUEUE_SIZE, setup.config.moco.projection_dim)))
  state = {**setup.queue_state, "queue": jnp.asarray(old_queue, jnp.float32),
           "queue_pointer": jnp.int32(pointer)}
  value, (_, new_state) = setup.queue_loss(setup.params, state, setup.views)
  q, k = setup.queries, setup.keys
  expected = numpy_moco_v2(q[:8], q[8:], k[:8], k[8:], old_queue,
                           setup.queue_config.moco.temperature)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  rows = (pointer + np.arange(16)) % QUEUE_SIZE
  new_queue = np.asarray(new_state["queue"])
  np.testing.assert_allclose(new_queue[rows], unit(k), atol=1e-5)  # [k1; k2], normalised
  untouched = np.setdiff1d(np.arange(QUEUE_SIZE), rows)
  np.testing.assert_array_equal(new_queue[untouched], old_queue[untouched].astype(np.float32))
  assert int(new_state["queue_pointer"]) == (pointer + 16) % QUEUE_SIZE


def test_queue_smaller_than_two_batches_is_a_config_error(setup):
  config = smoke_config(queue_size=8)
  state = {**setup.queue_state, "queue": jnp.zeros((8, config.moco.projection_dim)),
           "queue_pointer": jnp.int32(0)}
  with pytest.raises(errors.ConfigError, match="queue_size=8 is smaller than the 2 x 8 keys"):
    jax.eval_shape(lambda p, s, v: moco.loss(p, s, v, None, 0, config), setup.params, state,
                   setup.views)


SHARDED_QUEUE_STEP = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8")
    import ssl_jax  # its XLA:CPU flags, before jax starts
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from experiments import moco as experiment
    from ssl_jax.methods import moco
    from train_worker import flatten
    config = experiment.get_config("fashion_mnist,smoke")
    config.moco.queue_size = 96
    for group in config.views.values():
      group.crop_size = 28  # see train_worker.contract_config
    options = {"xla_backend_optimization_level": 0}
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)

    def step(params, state, batch):
      views = moco.views(batch, jax.random.PRNGKey(1), 0, config)
      loss, (_, state) = moco.loss(params, state, views, None, 0, config)
      return loss, state, views

    params, state = jax.jit(lambda r: moco.init(r, config, {"image": images[:1]}),
                            compiler_options=options)(jax.random.PRNGKey(0))
    for count in (1, 8):
      mesh = Mesh(np.array(jax.devices()[:count]), ("data",))
      replicated = NamedSharding(mesh, PartitionSpec())
      batch = jax.device_put({"image": images}, NamedSharding(mesh, PartitionSpec("data")))
      loss, new_state, views = jax.device_get(jax.jit(
          step, out_shardings=replicated, compiler_options=options)(
              *jax.device_put((params, state), replicated), batch))
      np.savez(sys.argv[1] + f"{count}.npz", loss=loss, **flatten(views, "views"),
               **flatten(new_state, "method_state"))
""")


def test_queue_step_on_eight_devices_matches_one(tmp_path):
  """The contract test runs the smoke config (MoCo v3, no queue); this runs its forward
  with a queue on 8 devices and on 1: the same loss, statistics and queue.

  Gradients are left to the contract test: at this width (4-channel stages) a 1e-6
  relative change of the views moves some gradient leaves by ~1e-2 of their scale (ReLU
  kinks), so comparing them at a second point would test rounding luck, not the queue.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "helpers")]))
  result = subprocess.run([sys.executable, "-c", SHARDED_QUEUE_STEP, str(tmp_path / "devices")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  one, eight = (dict(np.load(tmp_path / f"devices{n}.npz")) for n in (1, 8))
  assert set(one) == set(eight)
  for name in [k for k in one if k.startswith("views")]:
    np.testing.assert_allclose(eight[name], one[name], atol=1e-5, err_msg=name)
  np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-6)
  assert int(one["method_state['queue_pointer']"]) == int(eight["method_state['queue_pointer']"]) == 64
  for name in [k for k in one if k.startswith("method_state")]:
    scale = np.abs(one[name]).max() + 1e-12
    np.testing.assert_allclose(eight[name] / scale, one[name] / scale, atol=2e-5, err_msg=name)
