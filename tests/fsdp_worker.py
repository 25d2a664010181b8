"""FSDP against the replicated layout, in one process with 8 simulated CPU devices.

    python tests/fsdp_worker.py --data_dir D --workdir W --out OUT.npz

Writes OUT.npz with, for SimCLR's tiny ResNet (BatchNorm, LARS) and MAE's ViT, each
in layout `replicated` (fsdp=1) and `fsdp` (a 2x4 mesh): `{method}/{layout}/loss` (3
steps from the same init on the same batch), the final `{method}/{layout}/state...`
leaves, `{method}/{layout}/bytes_per_device`, and `{method}/split_leaves`. Then the
trainer: `trainer/uninterrupted...` (3 steps with fsdp=8), `trainer/resumed...` (the same
run stopped after 2 steps and resumed replicated for the last), `trainer/at_2...` (the
state at that stop), `trainer/restored_4_devices...` (that checkpoint restored onto 4 of
the devices as a 2x2 mesh with fsdp=2) and `trainer/restored_layout_ok` (each restored
leaf has the sharding that mesh's layout asks for).
"""
import argparse
import os
import sys


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path[:0] = [os.path.dirname(here), here]
  import ssl_jax  # noqa: F401  (its XLA:CPU flags, as every entrypoint)
  import jax
  import numpy as np
  from jax.sharding import Mesh
  from ssl_jax import checkpoint, engine, parallel, sharding, train
  from train_worker import contract_config, flatten, tiny_config
  assert jax.device_count() == 8, jax.devices()

  out = {}

  def with_layout(config, fsdp, min_size=256):
    config = config.copy_and_resolve_references()
    config.sharding.fsdp, config.sharding.min_size = fsdp, min_size
    return config

  images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
  host_batch = {"image": images, "label": np.zeros((32,), np.int32)}
  example = {k: v[:1] for k, v in host_batch.items()}
  for method, base in (("simclr", tiny_config(args.data_dir, 3)),
                       ("mae", contract_config("mae", args.data_dir, 3))):
    for layout, fsdp in (("replicated", 1), ("fsdp", 4)):
      config = with_layout(base, fsdp)
      mesh = parallel.make_mesh(fsdp)
      _, init, step = engine.build(config, mesh, example)
      abstract = engine.abstract_state(init, jax.random.PRNGKey(0))
      out[f"{method}/{layout}/bytes_per_device"] = sharding.bytes_per_device(abstract)
      if fsdp > 1:
        out[f"{method}/split_leaves"] = sum(
            not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(abstract))
        print(method, sharding.describe(abstract), file=sys.stderr)
      state = init(jax.random.PRNGKey(0))
      batch = parallel.to_global(host_batch, mesh)
      losses = []
      for _ in range(3):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
      out[f"{method}/{layout}/loss"] = np.asarray(losses)
      out.update(flatten(jax.device_get(state), f"{method}/{layout}/state"))

  # The trainer: a run started with fsdp=8 and resumed replicated for its last step.
  config = tiny_config(args.data_dir, 3)
  config.log_every_steps = 3
  uninterrupted = train.train(with_layout(config, 8), os.path.join(args.workdir, "uninterrupted"))
  out.update(flatten(jax.device_get(uninterrupted), "trainer/uninterrupted"))
  moved = os.path.join(args.workdir, "moved")
  at_2 = train.train(with_layout(config, 8), moved, stop_at_step=2)
  out.update(flatten(jax.device_get(at_2), "trainer/at_2"))
  resumed = train.train(with_layout(config, 1), moved)
  out.update(flatten(jax.device_get(resumed), "trainer/resumed"))

  # Its fsdp=8 checkpoint of step 2 onto 4 devices, fsdp=2.
  four = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), (parallel.DATA_AXIS, parallel.FSDP_AXIS),
              axis_types=(jax.sharding.AxisType.Auto,) * 2)
  small = with_layout(config, 2)
  small.global_batch_size = 16
  _, init, _ = engine.build(small, four)
  abstract = engine.abstract_state(init, jax.random.PRNGKey(small.seed))
  restored = checkpoint.Checkpointer(moved, async_save=False).restore(abstract, step=2)
  out["trainer/restored_layout_ok"] = all(
      got.sharding.is_equivalent_to(want.sharding, len(want.shape))
      for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract)))
  out.update(flatten(jax.device_get(restored), "trainer/restored_4_devices"))
  np.savez(args.out, **out)


if __name__ == "__main__":
  main()
