"""FSDP against the replicated layout, and a run resumed across layouts, in one process
with 8 simulated CPU devices.

    python tests/helpers/fsdp_worker.py --data_dir D --workdir W --out OUT.npz

Writes OUT.npz (leaf names are `keystr` paths of the train state, `.params[...]`):

`{method}/...`, for SimCLR's tiny ResNet (BatchNorm, LARS) and MAE's ViT (AdamW): one
step from a shared state (the replicated run's state after its first step, so that the
learning rate and the momentum are not zero) on a 2x4 (data, fsdp) mesh and replicated
on 8 devices. Each result is the change one step made to every float leaf (float64):
`{method}/replicated/...`, `{method}/fsdp/...`, and the probes `{method}/probe{i}/...`:
the replicated step from the shared state with every parameter moved by one float32 ulp
in a random direction (the reference's own rounding sensitivity, tests/helpers/compare.py). The
shared state is the first init seed (`{method}/seed`) at which the probes move no leaf of
the optimizer or method state by more than compare.SMOOTH of its scale. The same step
computed wrongly on purpose: `{method}/wrong_gather/...` (the largest split parameter's shards in the wrong order) and
`simclr/per_shard_update/...` (LARS's trust ratio from each shard's own norms). Also
`{method}/bytes_per_device/{layout}` and `{method}/split_leaves`.

`trainer/...`: a run with fsdp=8 stopped after 2 of its 3 steps (`trainer/at_2...`, the
state it returned, from memory) and resumed replicated (`trainer/resumed...`), against
`trainer/replayed...`: the state at 2 advanced by the replicated step on the third batch
of a fresh data stream, which the resumed run must equal bitwise. The same resume with
faults injected: `trainer/wrong_position...` (its data stream one batch late),
`trainer/bad_restore...` (the momentum not restored). And `trainer/restored_4_devices...`,
the fsdp=8 checkpoint of step 2 restored onto 4 of the devices as a 2x2 mesh with fsdp=2,
with `trainer/restored_layout_ok` (each leaf has the sharding that layout asks for).
"""
import argparse
import contextlib
import os
import shutil
import sys

import numpy as np  # jax waits until XLA_FLAGS is set

MIN_SIZE = 256  # the tiny networks' leaves are split too
PROBES = 2


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path[:0] = [os.path.dirname(os.path.dirname(here)), here]
  import ssl_jax  # noqa: F401  (its XLA:CPU flags, as every entrypoint)
  import jax
  from train_worker import contract_config, tiny_config
  assert jax.device_count() == 8, jax.devices()

  out = {}
  images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
  host_batch = {"image": images, "label": np.zeros((32,), np.int32)}
  for method, base in (("simclr", tiny_config(args.data_dir, 3)),
                       ("mae", contract_config("mae", args.data_dir, 3))):
    out.update(compare_layouts(method, base, host_batch))
  out.update(resume_across_layouts(tiny_config(args.data_dir, 3), args.workdir))
  np.savez(args.out, **out)


def with_layout(config, fsdp):
  config = config.copy_and_resolve_references()
  config.sharding.fsdp, config.sharding.min_size = fsdp, MIN_SIZE
  return config


def layout_shardings(init, rng):
  import jax
  return jax.tree.map(lambda leaf: leaf.sharding, jax.eval_shape(init, rng))


def state_dict(state) -> dict:
  import jax
  from train_worker import flatten
  return {k: np.asarray(v) for k, v in flatten(jax.device_get(state)).items()}


def step_changes(step, before, shardings, batch) -> dict:
  """What one step does to each float leaf of `before` (a host TrainState)."""
  import jax
  import compare
  new, _ = step(jax.device_put(before, shardings), batch)
  return compare.float_changes(state_dict(new), state_dict(before))


def nudged(state, seed: int):
  """The state with every float parameter moved by one float32 ulp, up or down at random."""
  import jax
  rng = np.random.default_rng(seed)
  # Both arguments in the leaf's dtype: nextafter in float64 would round back to p.
  move = lambda p: np.nextafter(p, np.where(rng.random(p.shape) < 0.5, -np.inf, np.inf
                                            ).astype(p.dtype))
  return state.replace(params=jax.tree.map(move, state.params))


def compare_layouts(method, base, host_batch) -> dict:
  import jax
  import compare
  from ssl_jax.core import parallel, sharding
  from ssl_jax.training import engine
  out, prefix = {}, f"{method}/"
  example = {k: v[:1] for k, v in host_batch.items()}
  built = {}
  for layout, fsdp in (("replicated", 1), ("fsdp", 4)):
    config = with_layout(base, fsdp)
    mesh = parallel.make_mesh(fsdp)
    _, init, step = engine.build(config, mesh, example)
    abstract = engine.abstract_state(init, jax.random.PRNGKey(0))
    out[f"{prefix}bytes_per_device/{layout}"] = sharding.bytes_per_device(abstract)
    built[layout] = (config, mesh, init, step, layout_shardings(init, jax.random.PRNGKey(0)),
                     parallel.to_global(host_batch, mesh))
  _, _, init, step, shardings, batch = built["replicated"]
  out[f"{prefix}split_leaves"] = sum(not s.is_fully_replicated
                                     for s in jax.tree.leaves(built["fsdp"][4]))

  # The shared state: the first seed at which the replicated step is smooth.
  for seed in range(4):
    shared, _ = step(init(jax.random.PRNGKey(seed)), batch)
    shared = jax.device_get(shared)
    want = step_changes(step, shared, shardings, batch)
    probes = [step_changes(step, nudged(shared, 10 + i), shardings, batch) for i in range(PROBES)]
    judged = {k: v for k, v in want.items()
              if not k.endswith(compare.ZERO_GRADIENT_LEAVES) and compare.parameters_excluded(k)}
    if max(compare.sensitivities(judged, probes).values()) < compare.SMOOTH:
      break
  out[f"{prefix}seed"] = seed
  out.update(prefixed(f"{prefix}replicated/", want))
  for i, probe in enumerate(probes):
    out.update(prefixed(f"{prefix}probe{i}/", probe))

  config, mesh, _, fsdp_step, fsdp_shardings, fsdp_batch = built["fsdp"]
  out.update(prefixed(f"{prefix}fsdp/", step_changes(fsdp_step, shared, fsdp_shardings,
                                                      fsdp_batch)))
  print(method, sharding.describe(jax.eval_shape(built["fsdp"][2], jax.random.PRNGKey(0))),
        file=sys.stderr)

  # Fault: the largest split parameter gathered with its shards in the wrong order.
  name, axis = largest_split_parameter(fsdp_shardings, shared)
  wrong = shared.replace(params=roll_leaf(shared.params, name, axis, mesh.shape["fsdp"]))
  new, _ = fsdp_step(jax.device_put(wrong, fsdp_shardings), fsdp_batch)
  out.update(prefixed(f"{prefix}wrong_gather/",
                      compare.float_changes(state_dict(new), state_dict(wrong))))
  out[f"{prefix}wrong_gather_leaf"] = name

  if config.optimizer.name == "lars":
    # Fault: each shard's LARS trust ratio from its own parameter and update norms.
    _, _, faulty_step = engine.build(config, mesh, example)
    with per_shard_norms(mesh.shape["fsdp"]):
      changes = step_changes(faulty_step, shared, fsdp_shardings, fsdp_batch)
    out.update(prefixed(f"{prefix}per_shard_update/", changes))
  return out


def prefixed(prefix, tree: dict) -> dict:
  return {prefix + k: v for k, v in tree.items()}


def largest_split_parameter(shardings, state):
  """(keystr path under params, split axis) of the largest parameter split over 'fsdp'."""
  import jax
  best = None
  for (path, sharding), leaf in zip(jax.tree_util.tree_leaves_with_path(shardings.params),
                                    jax.tree.leaves(state.params)):
    axes = [i for i, entry in enumerate(sharding.spec) if entry == "fsdp"]
    if axes and (best is None or leaf.size > best[2]):
      best = (jax.tree_util.keystr(path), axes[0], leaf.size)
  return best[0], best[1]


def roll_leaf(params, name, axis, shards):
  import jax
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.roll(leaf, leaf.shape[axis] // shards, axis)
      if jax.tree_util.keystr(path) == name else leaf, params)


@contextlib.contextmanager
def per_shard_norms(shards: int):
  """While tracing: optax's norms (LARS's trust ratio) computed per fsdp shard of a leaf,
  as an optimizer that updated each device's shard on its own would."""
  import jax.numpy as jnp
  from optax._src import numerics
  from ssl_jax.core import sharding
  original = numerics.safe_norm

  def safe_norm(x, min_norm, ord=None, axis=None, keepdims=False):
    spec = sharding.leaf_spec(x.shape, "fsdp", shards, MIN_SIZE)
    split = [i for i, entry in enumerate(spec) if entry == "fsdp"]
    if not split or axis is not None:
      return original(x, min_norm, ord, axis, keepdims)
    moved = jnp.moveaxis(x, split[0], 0)
    norms = jnp.sqrt(jnp.sum(moved.reshape(shards, -1) ** 2, axis=1))
    norms = jnp.maximum(jnp.repeat(norms, x.shape[split[0]] // shards), min_norm)
    shape = [x.shape[i] if i == split[0] else 1 for i in range(x.ndim)]
    return jnp.broadcast_to(norms.reshape(shape), x.shape)

  numerics.safe_norm = safe_norm
  try:
    yield
  finally:
    numerics.safe_norm = original


def resume_across_layouts(config, workdir) -> dict:
  import jax
  from jax.sharding import Mesh
  from ssl_jax import train
  from ssl_jax.core import parallel
  from ssl_jax.training import checkpoint, engine
  from ssl_jax.data import feed
  out = {}
  config.log_every_steps = 3
  stopped = os.path.join(workdir, "stopped")
  at_2 = jax.device_get(train.train(with_layout(config, 8), stopped, stop_at_step=2))
  out.update(prefixed("trainer/at_2", state_dict(at_2)))
  copies = {}
  for fault in ("wrong_position", "bad_restore"):
    copies[fault] = os.path.join(workdir, fault)
    shutil.copytree(stopped, copies[fault])

  replicated = with_layout(config, 1)
  out.update(prefixed("trainer/resumed", state_dict(train.train(replicated, stopped))))

  # The reference: the state at 2 (from memory, not from the checkpoint) advanced by the
  # replicated step on the third batch of a fresh stream.
  mesh = parallel.make_mesh(replicated.sharding.fsdp)
  _, init, step = engine.build(replicated, mesh)
  stream = train.train_stream(replicated, mesh)
  try:
    batches = [next(stream) for _ in range(3)]
  finally:
    stream.close()
  new, _ = step(jax.device_put(at_2, layout_shardings(init, jax.random.PRNGKey(0))), batches[2])
  out.update(prefixed("trainer/replayed", state_dict(new)))

  # Faults injected into the resume: the stream restored one batch late; the momentum
  # not restored (zeros).
  set_state = feed.DevicePrefetch.set_state
  feed.DevicePrefetch.set_state = lambda self, s: set_state(self, {**s, "next_index":
                                                                   s["next_index"] + 1})
  try:
    out.update(prefixed("trainer/wrong_position",
                        state_dict(train.train(replicated, copies["wrong_position"]))))
  finally:
    feed.DevicePrefetch.set_state = set_state
  restore = checkpoint.Checkpointer.restore_latest_good
  checkpoint.Checkpointer.restore_latest_good = lambda self, *a, **k: (lambda s: s.replace(
      opt_state=jax.tree.map(jax.numpy.zeros_like, s.opt_state)))(restore(self, *a, **k))
  try:
    out.update(prefixed("trainer/bad_restore",
                        state_dict(train.train(replicated, copies["bad_restore"]))))
  finally:
    checkpoint.Checkpointer.restore_latest_good = restore

  # The fsdp=8 checkpoint of step 2 onto 4 devices, fsdp=2.
  four = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), (parallel.DATA_AXIS, parallel.FSDP_AXIS),
              axis_types=(jax.sharding.AxisType.Auto,) * 2)
  small = with_layout(config, 2)
  small.global_batch_size = 16
  _, init, _ = engine.build(small, four)
  abstract = engine.abstract_state(init, jax.random.PRNGKey(small.seed))
  restored = checkpoint.Checkpointer(stopped, async_save=False).restore(abstract, step=2)
  out["trainer/restored_layout_ok"] = all(
      got.sharding.is_equivalent_to(want.sharding, len(want.shape))
      for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract)))
  out.update(prefixed("trainer/restored_4_devices", state_dict(restored)))
  return out


if __name__ == "__main__":
  main()
