"""Steady-state train-step benchmark on synthetic data, one JSON line on stdout.

    python -m ssl_jax.tools.bench simclr_resnet18 [--batch 128] [--steps 10] [--warmup 2]
    python -m ssl_jax.tools.bench M_resnet18          # M: any method with a CIFAR-10 ResNet recipe
    python -m ssl_jax.tools.bench mae_vit                                 # ../shared/peers/mae_vit.py
    python -m ssl_jax.tools.bench bert_mlm                                # ../shared/peers/bert_mlm.py
    python -m ssl_jax.tools.bench --experiment simclr:fashion_mnist     # any experiment's step
    python -m ssl_jax.tools.bench --experiment simclr:fashion_mnist --real_data [--workers 2]
    python -m ssl_jax.tools.bench loader --dataset fashion_mnist --workers 0,1,2 [--batch 512]
    python -m ssl_jax.tools.bench mae_vit [--precision bfloat16] [--remat full|dots] [--fsdp N]

The `*_resnet18` specs share the backbone and input of ../shared/peers/simclr_resnet18.py:
ResNet-18 with the small-image stem, 32x32x3 uint8 images, batch B images, SGD momentum
0.9 (lr 0.1, wd 5e-4). The objective is the method's own: its section at the method's
defaults (the papers' heads: simclr's projection 512-2048-128 and T=0.2 are the peer's
spec) and the view groups of its experiment's CIFAR-10 recipe (32x32 views; 2 global
32x32 + 6 local 16x16 crops for DINO and SimDINO). The specs are found, not listed:
every method whose experiment has a CIFAR-10 recipe on a ResNet with view groups. `mae_vit` is the spec of ../shared/peers/mae_vit.py: ViT-Ti/4
on 32x32x3 images (192-d, 12 blocks, 3 heads), decoder 128-d x 4 blocks x 4 heads, 75%
masking, AdamW 1.5e-4 (0.9, 0.95) wd 0.05; its view is a random resized crop and flip.
Unlike the peers,
views are augmented inside the timed step, as in real training. `--experiment M:DATASET`
times the step of `experiments/M.py` for that dataset (the README demo:
`simclr:fashion_mnist`).

`bert_mlm` is the spec of ../shared/peers/bert_mlm.py: BERT-style MLM (vocab 8192, hidden
256, 4 layers, 4 heads, FFN 1024) on batches of 32 random 128-token sequences, masked
inside the step; items are tokens.

On a CPU host the step runs on as many devices as a training run of its config would
(training/cpu_devices.py: one per core for mae_vit and bert_mlm, one for a ResNet; the
line's `devices`); a count in XLA_FLAGS is kept.

`--real_data` feeds the experiment's step from its dataset through the trainer's loader
and device prefetch (`--workers` processes) instead of one synthetic batch: each timed
step includes its wait for input, reported as input_wait_fraction. `loader` times the
host loader alone (read, decode, host preprocess, batch) for each worker count.

Fields: step_s_median over the timed steps, items_per_s = items (images, or tokens for
text) / step_s_median, params (trained parameters),
compile_s (lower + compile), flops_per_step from XLA's cost analysis (backend-specific: on
GPU it omits cuDNN's convolutions), model_flops_per_step (ssl_jax/tools/flops.py: the matmuls
and convolutions of the traced step, forward and backward, every view), mfu =
model_flops_per_step / step_s_median / peak, with peak_source saying where the peak
came from (on CPU: matmul_peak_gflops, a float32 2048x2048 jitted matmul, best of 5 in
the same run, or for a step whose convolutions ran in oneDNN the better of that and
onednn_conv_peak_gflops, one oneDNN 3x3 convolution, measured the same way; and xla_mfu
from XLA's count too; on GPU and TPU: the datasheet table in
flops.py), residual_bytes (the activations the backward pass keeps), temp_bytes (XLA's
temporary buffers), peak_bytes (the device allocator's peak, where the backend reports
it), state_bytes_per_device (parameters, optimizer and method state one device holds:
`--fsdp N` splits them, ssl_jax/core/sharding.py), the CPU model, since these machines
differ, host_allocator (tcmalloc, or the system's malloc: ssl_jax/core/host_malloc.py), and
for a ResNet conv_impl (whose convolutions ran: "onednn", or XLA's "fast" or "xla";
ssl_jax/models/conv.py; XLA's flops_per_step leaves oneDNN's calls out).
"""
import argparse
import importlib
import itertools
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import methods, train
from ssl_jax.core import host_malloc, parallel, sharding
from ssl_jax.data import pipeline, preprocess, presets, sources
from ssl_jax.models import conv, onednn, remat
from ssl_jax.tools import bench_specs, flops
from ssl_jax.tools.bench_specs import CIFAR_SHAPE, TEXT_LENGTH
from ssl_jax.training import cpu_devices, engine

def _experiment_config(spec: str, batch: int | None) -> ml_collections.ConfigDict:
  module, _, arg = spec.partition(":")
  config = importlib.import_module(f"experiments.{module}").get_config(arg or None)
  if batch:
    config.global_batch_size = batch
  return config


def synthetic_batches(config, image_shape, batch: int) -> tuple[dict, dict]:
  """(a one-record example, a batch of `batch`) of random inputs for the config's data:
  uint8 images, or token ids [CLS] ordinary pieces [SEP] filling every position (the
  peer's sequences have no padding either)."""
  rng = np.random.default_rng(0)
  if config.data.modality == "text":
    length = config.data.max_length
    tokens = rng.integers(5, config.data.vocab_size, (batch, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 2, 3  # [CLS], [SEP] (ssl_jax/data/text.py)
    return {"tokens": tokens[:1]}, {"tokens": tokens}
  example = {"image": np.zeros((1, *image_shape), np.uint8), "label": np.zeros((1,), np.int32)}
  images = rng.integers(0, 256, (batch, *image_shape), dtype=np.uint8)
  return example, {"image": images, "label": np.zeros((batch,), np.int32)}


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _best_seconds(fn, *args, repeats: int) -> float:
  """The fastest of `repeats` timed calls of jitted `fn(*args)`, after one untimed call."""
  fn(*args).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn(*args).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Best-of float32 n x n matmul throughput: the machine's attainable peak, measured now."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  return 2 * n ** 3 / _best_seconds(jax.jit(lambda x, y: x @ y), a, a, repeats=repeats) / 1e9


def onednn_conv_peak_gflops(repeats: int = 5) -> float:
  """Best-of float32 throughput of one oneDNN 3x3 convolution (64 x 16x16x128 -> 128, the
  ResNet's second stage): oneDNN's convolutions run faster than XLA's jitted matmul on
  some CPUs, so a step that runs them is measured against the better of the two."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 16, 16, 128), np.float32))
  kernel = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 128, 128), np.float32))
  one_conv = jax.jit(lambda a, b: onednn.conv(a, b, (1, 1), ((1, 1), (1, 1))))
  seconds = _best_seconds(one_conv, x, kernel, repeats=repeats)
  return 2 * 64 * 16 * 16 * 128 * 128 * 9 / seconds / 1e9


def _conv_impl(config, mesh) -> str:
  """The convolution strategy the step ran ("auto" resolved for its mesh; oneDNN's calls
  are float32 only, so a bfloat16 step's convolutions are XLA's "fast" ones)."""
  with conv.target_backend(mesh.devices.flat[0].platform, mesh.devices.size):
    impl = conv.resolve_impl(config.model.get("conv_impl", "auto"))
  dtype = engine.with_precision(config).model.get("dtype", "float32")
  return "fast" if impl == "onednn" and not conv.onednn_takes(dtype) else impl


def _flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


def _memory(compiled, config, state, batch) -> dict:
  """What the step holds: residual_bytes, the activations its backward pass keeps (of one
  micro-batch; what remat and accumulation shrink, backend-independent); temp_bytes,
  XLA's temporary allocation for the compiled step; peak_bytes, the device allocator's
  peak where the backend reports one (GPU, TPU)."""
  method = methods.get(config.method)
  k = config.grad_accumulation
  rng = jax.random.PRNGKey(0)

  def loss(params):  # traced, not run: the views' arrays count as kept values too
    views = method.views(batch, rng, state.step, config)
    micro = jax.tree.map(lambda v: v[::k], views)
    return method.loss(params, state.method_state, micro, rng, state.step, config)[0]
  out = {"residual_bytes": remat.residual_bytes(loss, state.params)}
  analysis = compiled.memory_analysis()
  if analysis is not None:
    out["temp_bytes"] = int(analysis.temp_size_in_bytes)
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["peak_bytes"] = int(stats["peak_bytes_in_use"])
  return out


def run(name: str, batch: int | None = None, steps: int = 10, warmup: int = 2,
        experiment: str | None = None, real_data: bool = False, workers: int = 0,
        data_dir: str | None = None, precision: str = "float32", fsdp: int = 1,
        remat: str | None = None, set_cpu_devices: bool = False) -> dict:
  """One bench line. `real_data` (with `experiment`): the step fed by the real loader
  (`workers` processes), each timed step including its wait for the batch.
  `set_cpu_devices`: split a CPU host into devices as a training run of this config
  would (training/cpu_devices.py); only before jax has started, as the command does."""
  if real_data and not experiment:
    raise SystemExit("--real_data needs --experiment M:DATASET (the built-in specs have "
                     "no dataset: their inputs are synthetic)")
  if experiment:
    config = _experiment_config(experiment, batch)
    if data_dir:
      config.data.data_dir = data_dir
    data = config.data
    image_shape = ((data.image_size, data.image_size, len(data.mean))
                   if data.modality == "image" else None)
    name = f"experiment:{experiment}"
  else:
    make_config, default_batch = bench_specs.bench_spec(name)
    config, image_shape = make_config(batch or default_batch), CIFAR_SHAPE
  config.precision = precision
  config.sharding.fsdp = fsdp
  if remat is not None:
    config.model.remat = remat
  batch = config.global_batch_size
  if set_cpu_devices:
    cpu_devices.apply(config)
  mesh = parallel.make_mesh(config.sharding.fsdp)
  if real_data:
    config.loader_workers = workers
    stream = train.train_stream(config, mesh)  # exactly the trainer's input path
    _, init, step = engine.build(config, mesh)
    data = next(stream)
  else:
    example, host_batch = synthetic_batches(config, image_shape, batch)
    _, init, step = engine.build(config, mesh, example)
    data = parallel.to_global(host_batch, mesh)
    stream = itertools.repeat(data)
  state = init(jax.random.PRNGKey(0))
  state_bytes = sharding.bytes_per_device(engine.abstract_state(init, jax.random.PRNGKey(0)))
  items = batch * (TEXT_LENGTH if config.data.modality == "text" else 1)

  start = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  for i in range(warmup):
    state, metrics = compiled(state, next(stream))
    jax.block_until_ready(metrics)
    print(f"warmup {i + 1}/{warmup}: loss {float(metrics['loss']):.4f}", file=sys.stderr)
  times = []
  if real_data:
    stream.take_wait_seconds()
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, next(stream))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
    print(f"step {i + 1}/{steps}: {times[-1]:.3f}s loss {float(metrics['loss']):.4f}", file=sys.stderr)

  median = statistics.median(times)
  result = {"bench": name, "impl": "ssl_jax", "batch": batch, "step_s_median": round(median, 4),
            "items_per_s": round(items / median, 2),
            "items": "tokens" if config.data.modality == "text" else "images",
            "params": int(sum(np.prod(p.shape) for p in jax.tree.leaves(state.params))),
            "compile_s": round(compile_s, 2),
            "flops_per_step": _flops(compiled), "step_s_min": round(min(times), 4),
            "step_s_max": round(max(times), 4), "final_loss": float(metrics["loss"]),
            "backend": jax.default_backend(), "devices": jax.device_count(),
            "device_kind": jax.devices()[0].device_kind, "cpu": cpu_model(),
            "host_allocator": "tcmalloc" if host_malloc.loaded() else "system",
            "data": "real" if real_data else "synthetic", "precision": precision,
            "fsdp": mesh.shape[parallel.FSDP_AXIS], "state_bytes_per_device": state_bytes,
            "remat": config.model.get("remat", "none")}
  if config.model.name == "resnet":
    result["conv_impl"] = _conv_impl(config, mesh)
  result.update(_memory(compiled, engine.with_precision(config), state, data))
  if real_data:
    result["loader_workers"] = workers
    result["input_wait_fraction"] = round(stream.take_wait_seconds() / sum(times), 4)
    stream.close()
  result["model_flops_per_step"] = flops.train_step_model_flops(
      config, mesh, step, state, data, None if real_data else example)
  if jax.default_backend() == "cpu":
    peak = matmul_peak_gflops()
    result["matmul_peak_gflops"] = round(peak, 1)
    peak, source = peak * 1e9, f"measured: float32 2048x2048 matmul, {peak:.0f} GFLOP/s"
    if result.get("conv_impl") == "onednn":
      conv_peak = onednn_conv_peak_gflops()
      result["onednn_conv_peak_gflops"] = round(conv_peak, 1)
      if conv_peak * 1e9 > peak:
        peak, source = conv_peak * 1e9, (f"measured: float32 oneDNN 3x3 convolution, "
                                         f"{conv_peak:.0f} GFLOP/s")
  else:
    known = flops.device_peak(jax.devices()[0].device_kind, "float32")
    peak, source = known if known else (None, f"unknown device kind {jax.devices()[0].device_kind!r}")
  result["peak_source"] = source
  if peak:
    result["mfu"] = round(result["model_flops_per_step"] / median / peak, 4)
  if jax.default_backend() == "cpu" and result["flops_per_step"]:
    result["xla_mfu"] = round(result["flops_per_step"] / median / peak, 4)
  return result


def run_loader(dataset: str, batch: int, worker_counts, batches: int = 50,
               split: str = "train", data_dir: str | None = None) -> dict:
  """Host loader alone (read, decode, host preprocess, batch; no device): examples/s of
  the training stream by worker count, after each count's first batch (start-up)."""
  data = presets.data_config(dataset)
  source = sources.get_source(data.name, split, data_dir)
  by_workers = []
  for workers in worker_counts:
    start = time.perf_counter()
    iterator = iter(pipeline.train_loader(source, global_batch_size=batch, seed=0,
                                          keys=tuple(data.features),
                                          preprocess=preprocess.from_config(data),
                                          worker_count=workers))
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    seconds = time.perf_counter() - start
    getattr(iterator, "close", lambda: None)()
    by_workers.append({"workers": workers, "items_per_s": round(batches * batch / seconds, 1),
                       "first_batch_s": round(first, 2)})
    print(f"{workers} workers: {by_workers[-1]['items_per_s']:.0f} examples/s", file=sys.stderr)
  return {"bench": f"loader:{dataset}", "impl": "ssl_jax", "batch": batch, "batches": batches,
          "by_workers": by_workers, "cpus": os.cpu_count(), "cpu": cpu_model()}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("bench", nargs="?", default=None,
                      help="M_resnet18 (any method with a CIFAR-10 ResNet recipe), mae_vit, "
                           "bert_mlm, or loader")
  parser.add_argument("--experiment", default=None,
                      help="time experiments/M.py's step instead: M:DATASET, e.g. simclr:fashion_mnist")
  parser.add_argument("--batch", type=int, default=None, help="images per step (default: per bench)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  parser.add_argument("--real_data", action="store_true",
                      help="with --experiment: feed the step through the real loader")
  parser.add_argument("--workers", default="0",
                      help="loader worker processes: one count (--real_data) or a list "
                           "(loader: e.g. 0,1,2,4)")
  parser.add_argument("--dataset", default="fashion_mnist", help="loader: the dataset preset")
  parser.add_argument("--batches", type=int, default=50, help="loader: timed batches per count")
  parser.add_argument("--precision", default="float32", choices=engine.PRECISIONS,
                      help="config.precision of the step")
  parser.add_argument("--remat", default=None, choices=["none", *remat.POLICIES],
                      help="config.model.remat of the step (default: the spec's, none)")
  parser.add_argument("--fsdp", type=int, default=1,
                      help="config.sharding.fsdp: devices each large state leaf is split over "
                           "(-1: all); 1 replicates the state")
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir of the real data (default: "
                      "$TFDS_DATA_DIR or ~/tensorflow_datasets)")
  args = parser.parse_args(argv)
  try:
    workers = [int(w) for w in args.workers.split(",")]
  except ValueError:
    parser.error(f"--workers {args.workers!r}: expected counts, e.g. 0,1,2")
  if args.bench == "loader":
    print(json.dumps(run_loader(args.dataset, args.batch or 512, workers, args.batches,
                                data_dir=args.data_dir)))
    return
  if not args.bench and not args.experiment:
    parser.error(f"give a bench ({', '.join(bench_specs.spec_names())}, loader) or --experiment M:DATASET")
  if len(workers) != 1:
    parser.error("--workers takes one count here (a list is for the loader bench)")
  print(json.dumps(run(args.bench, args.batch, args.steps, args.warmup, args.experiment,
                       args.real_data, workers[0], args.data_dir, args.precision, args.fsdp,
                       args.remat, set_cpu_devices=True)))


if __name__ == "__main__":
  main()
