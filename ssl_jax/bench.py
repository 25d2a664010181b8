"""Steady-state train-step benchmark on synthetic data, one JSON line on stdout.

    python -m ssl_jax.bench simclr_resnet18 [--batch 128] [--steps 10] [--warmup 2]

`simclr_resnet18` mirrors ../shared/peers/simclr_resnet18.py: ResNet-18 with the
small-image stem, 32x32x3 uint8 images, batch B images (2B views), projection
512-2048-128, NT-Xent T=0.2, SGD momentum 0.9 (lr 0.1, wd 5e-4). Unlike the peer, the
views are augmented inside the timed step (crop, flip, colour jitter, grayscale), as in
real training. `simclr_fashion_mnist` times the README demo's step (28x28x1, its model).

Fields: step_s_median over the timed steps, items_per_s = batch / step_s_median,
compile_s (lower + compile), flops_per_step from XLA's cost analysis; on CPU also
matmul_peak_gflops (float32 2048x2048 jitted matmul, best of 5, same run) and mfu =
flops_per_step / step_s_median / peak.
"""
import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import engine, optim, parallel


def _simclr_resnet18(batch: int):
  from experiments import simclr
  config = simclr.get_config("cifar10")
  config.global_batch_size = batch
  config.total_steps = 1000
  config.model.depth = 18
  config.simclr.temperature = 0.2
  config.simclr.projection_hidden_dims = (2048,)
  config.simclr.projection_dim = 128
  config.optimizer = optim.default_config(name="sgd", learning_rate=0.1, lr_scaling="none",
                                          weight_decay=5e-4, momentum=0.9)
  return config, (32, 32, 3)


def _simclr_fashion_mnist(batch: int):
  from experiments import simclr
  config = simclr.get_config("fashion_mnist")
  config.global_batch_size = batch
  return config, (28, 28, 1)


BENCHES = {"simclr_resnet18": (_simclr_resnet18, 128),
           "simclr_fashion_mnist": (_simclr_fashion_mnist, 256)}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Best-of float32 n x n matmul throughput: the machine's attainable peak, measured now."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9


def _flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


def run(name: str, batch: int | None = None, steps: int = 10, warmup: int = 2) -> dict:
  if name not in BENCHES:
    raise SystemExit(f"unknown bench {name!r}; available: {sorted(BENCHES)}")
  make_config, default_batch = BENCHES[name]
  batch = batch or default_batch
  config, image_shape = make_config(batch)
  mesh = parallel.make_mesh()
  example = {"image": np.zeros((1, *image_shape), np.uint8), "label": np.zeros((1,), np.int32)}
  _, init, step = engine.build(config, mesh, example)
  state = init(jax.random.PRNGKey(0))
  images = np.random.default_rng(0).integers(0, 256, (batch, *image_shape), dtype=np.uint8)
  data = parallel.to_global({"image": images, "label": np.zeros((batch,), np.int32)}, mesh)

  start = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  for i in range(warmup):
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    print(f"warmup {i + 1}/{warmup}: loss {float(metrics['loss']):.4f}", file=sys.stderr)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
    print(f"step {i + 1}/{steps}: {times[-1]:.3f}s loss {float(metrics['loss']):.4f}", file=sys.stderr)

  median = statistics.median(times)
  result = {"bench": name, "impl": "ssl_jax", "batch": batch, "step_s_median": round(median, 4),
            "items_per_s": round(batch / median, 2), "compile_s": round(compile_s, 2),
            "flops_per_step": _flops(compiled), "step_s_min": round(min(times), 4),
            "step_s_max": round(max(times), 4), "final_loss": float(metrics["loss"]),
            "backend": jax.default_backend(), "devices": jax.device_count()}
  if jax.default_backend() == "cpu":
    peak = matmul_peak_gflops()
    result["matmul_peak_gflops"] = round(peak, 1)
    if result["flops_per_step"]:
      result["mfu"] = round(result["flops_per_step"] / median / (peak * 1e9), 4)
  return result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("bench", choices=sorted(BENCHES))
  parser.add_argument("--batch", type=int, default=None, help="images per step (default: per bench)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  args = parser.parse_args(argv)
  print(json.dumps(run(args.bench, args.batch, args.steps, args.warmup)))


if __name__ == "__main__":
  main()
