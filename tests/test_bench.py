"""The benchmark CLI prints one JSON line with the fields the README promises, and every
built-in spec builds a step that traces (compiling them all would take minutes)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ssl_jax import bench, engine, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_prints_one_json_line():
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.bench", "--experiment", "simclr:fashion_mnist",
       "--batch", "16", "--steps", "2", "--warmup", "1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  report = json.loads(lines[0])
  assert report["bench"] == "experiment:simclr:fashion_mnist" and report["impl"] == "ssl_jax"
  assert report["batch"] == 16 and report["cpu"]
  for field in ("step_s_median", "items_per_s", "compile_s", "flops_per_step",
                "matmul_peak_gflops", "mfu", "residual_bytes", "temp_bytes",
                "model_flops_per_step", "xla_mfu"):
    assert report[field] > 0, field
  assert report["step_s_min"] <= report["step_s_median"] <= report["step_s_max"]
  assert 0 < report["mfu"] < 1 and report["peak_source"].startswith("measured")
  # Replicated: one device holds every parameter and its LARS momentum, in float32.
  assert report["fsdp"] == 1 and report["remat"] == "none"
  assert report["state_bytes_per_device"] >= 2 * 4 * report["params"]
  # Two counts of one program: the matmuls and convolutions ssl_jax traces, and XLA's
  # (which adds element-wise work, and counts the convolutions it rewrote its own way).
  assert 0.5 < report["model_flops_per_step"] / report["flops_per_step"] < 1.5


@pytest.mark.parametrize("name", sorted(bench.BENCHES))
def test_every_spec_traces(name):
  make_config, _ = bench.BENCHES[name]
  config = make_config(8)
  mesh = parallel.make_mesh()
  example, batch = bench.synthetic_batches(config, bench.CIFAR_SHAPE, 8)
  _, init, step = engine.build(config, mesh, example)
  state = jax.eval_shape(init, jax.random.PRNGKey(0))
  _, metrics = jax.eval_shape(step, state, batch)
  assert metrics["loss"].shape == ()


def test_mae_vit_spec_has_the_peers_parameter_count():
  """../shared/peers/README.md reports 6,172,720 trainable parameters for mae_vit.py (its
  sin-cos position embeddings are frozen buffers, as ours are constants)."""
  from ssl_jax import methods
  config = bench.BENCHES["mae_vit"][0](8)
  images = jax.ShapeDtypeStruct((1, *bench.CIFAR_SHAPE), np.uint8)
  params, _ = jax.eval_shape(lambda rng, x: methods.get("mae").init(rng, config, {"image": x}),
                             jax.random.PRNGKey(0), images)
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == 6_172_720


def test_real_data_step_and_loader_bench(tiny_data_dir):
  """`--real_data` feeds the step through the trainer's loader (here one worker
  process) and reports the wait; the loader bench reports examples/s per worker count."""
  report = bench.run(None, batch=16, steps=2, warmup=0, experiment="simclr:fashion_mnist",
                     real_data=True, workers=1, data_dir=tiny_data_dir)
  assert report["data"] == "real" and report["loader_workers"] == 1
  assert 0 <= report["input_wait_fraction"] < 1 and report["items_per_s"] > 0
  loader = bench.run_loader("fashion_mnist", batch=32, worker_counts=[0, 1], batches=3,
                            data_dir=tiny_data_dir)
  assert [r["workers"] for r in loader["by_workers"]] == [0, 1]
  assert all(r["items_per_s"] > 0 and r["first_batch_s"] > 0 for r in loader["by_workers"])
  with pytest.raises(SystemExit, match="--real_data needs --experiment"):
    bench.run("simclr_resnet18", real_data=True)
