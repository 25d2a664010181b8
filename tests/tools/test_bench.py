"""The benchmark CLI prints one JSON line with the fields the README promises, and every
built-in spec builds a step that traces (compiling them all would take minutes)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ssl_jax.core import parallel
from ssl_jax.models import onednn
from ssl_jax.tools import bench, bench_specs
from ssl_jax.training import engine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_prints_one_json_line():
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.tools.bench", "--experiment", "simclr:fashion_mnist",
       "--batch", "16", "--steps", "2", "--warmup", "1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  report = json.loads(lines[0])
  assert report["bench"] == "experiment:simclr:fashion_mnist" and report["impl"] == "ssl_jax"
  assert report["batch"] == 16 and report["cpu"]
  # The subprocess inherits the suite's LD_PRELOAD (tests/conftest.py), or re-executes
  # itself under tcmalloc (ssl_jax/core/host_malloc.py): either way it runs under it here.
  expected = "system" if os.environ.get("SSL_JAX_TCMALLOC") == "0" else "tcmalloc"
  assert report["host_allocator"] == expected
  for field in ("step_s_median", "items_per_s", "compile_s", "flops_per_step",
                "matmul_peak_gflops", "mfu", "residual_bytes", "temp_bytes",
                "model_flops_per_step", "xla_mfu"):
    assert report[field] > 0, field
  assert report["step_s_min"] <= report["step_s_median"] <= report["step_s_max"]
  assert 0 < report["mfu"] < 1 and report["peak_source"].startswith("measured")
  # Replicated: one device holds every parameter and its LARS momentum, in float32.
  assert report["fsdp"] == 1 and report["remat"] == "none"
  assert report["state_bytes_per_device"] >= 2 * 4 * report["params"]
  assert report["conv_impl"] == ("onednn" if onednn.available() else "fast")
  if report["conv_impl"] == "onednn":
    # XLA's count leaves the FFI calls out: most of this step's work is in them.
    assert report["model_flops_per_step"] > 10 * report["flops_per_step"]
    assert report["onednn_conv_peak_gflops"] > 0
  else:
    # Two counts of one program: the matmuls and convolutions ssl_jax traces, and XLA's
    # (which adds element-wise work, and counts the convolutions it rewrote its own way).
    assert 0.5 < report["model_flops_per_step"] / report["flops_per_step"] < 1.5


@pytest.mark.parametrize("name", bench_specs.spec_names())
def test_every_spec_traces(name):
  make_config, _ = bench_specs.bench_spec(name)
  config = make_config(8)
  mesh = parallel.make_mesh()
  example, batch = bench.synthetic_batches(config, bench_specs.CIFAR_SHAPE, 8)
  _, init, step = engine.build(config, mesh, example)
  state = jax.eval_shape(init, jax.random.PRNGKey(0))
  _, metrics = jax.eval_shape(step, state, batch)
  assert metrics["loss"].shape == ()


def test_resnet18_specs_are_discovered_with_the_peers_settings():
  """Every image method with a CIFAR-10 ResNet recipe has a spec, found without a list;
  simclr_resnet18 is ../shared/peers/simclr_resnet18.py's objective: two 32x32 views,
  projection 512-2048-128, NT-Xent at T=0.2, SGD 0.1 with momentum 0.9 and wd 5e-4."""
  names = bench_specs.spec_names()
  for method in ("simclr", "byol", "moco", "dino", "simsiam", "barlow_twins", "vicreg",
                 "simdino"):
    assert f"{method}_resnet18" in names
  assert "mae_resnet18" not in names and "mlm_resnet18" not in names  # a ViT, a Transformer
  config = bench_specs.bench_spec("simclr_resnet18")[0](8)
  assert [(name, g.count, g.crop_size) for name, g in config.views.items()] == [("pair", 2, 32)]
  assert (config.simclr.temperature, tuple(config.simclr.projection_hidden_dims),
          config.simclr.projection_dim) == (0.2, (2048,), 128)
  assert (config.model.depth, config.model.width_multiplier) == (18, 1.0)
  assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.momentum,
          config.optimizer.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
  with pytest.raises(SystemExit, match="no bench 'clip_resnet18'"):
    bench_specs.bench_spec("clip_resnet18")


def test_mae_vit_spec_has_the_peers_parameter_count():
  """../shared/peers/README.md reports 6,172,720 trainable parameters for mae_vit.py (its
  sin-cos position embeddings are frozen buffers, as ours are constants)."""
  from ssl_jax import methods
  config = bench_specs.BENCHES["mae_vit"][0](8)
  images = jax.ShapeDtypeStruct((1, *bench_specs.CIFAR_SHAPE), np.uint8)
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
