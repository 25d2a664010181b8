"""Compile a config's real train step for a TPU slice on this (CPU) host, before renting it.

    python -m ssl_jax.tools.aot --config experiments/dino.py:imagenet2012 --topology v5e:8x8
    python -m ssl_jax.tools.aot --config experiments/mae.py:imagenet2012 --topology v4:4x4x4 \\
        --config.precision=bfloat16 --config.sharding.fsdp=8

Builds the step exactly as `train` does (engine.build: the config's method, model,
optimizer, precision and sharding rules over a (data, fsdp) mesh of the topology's chips,
at the config's global batch), from abstract inputs shaped by the data config alone
(modality.placeholder_example: no dataset needed), compiles it with libtpu's compiler and
reports per chip: the state's bytes and the compiler's arguments, outputs and temporaries
against the chip's HBM (fits or not), the compiled FLOPs and bytes of one step, a
roofline step time (the larger of FLOPs / peak and bytes / HBM bandwidth, datasheet
numbers in ssl_jax/tools/tpu.py), the time per epoch and for the whole run that implies,
the MFU bound (the model's matmul FLOPs, ssl_jax/tools/flops.py, over peak x roofline
time) and the compile time. Then the same for evaluation's feature-extraction step
(--noeval skips it). One JSON line, then a short table.

The roofline is a lower bound on the step time: real steps also wait on collectives,
the host and imperfect overlap. Memory is the compiler's own buffer assignment, so
"fits" is what the TPU will allocate, less the runtime's own reserve.
"""
import json
import math
import re
import sys
import time

import jax
import ml_collections

from ssl_jax import evals, methods, train
from ssl_jax.core import log, parallel, sharding
from ssl_jax.core.errors import ConfigError
from ssl_jax.data import modality, presets
from ssl_jax.evals.lib import extraction
from ssl_jax.models import conv
from ssl_jax.tools import flops, tpu
from ssl_jax.training import engine

GIB = 2**30


def _batch(example: dict, size: int, mesh) -> dict:
  """Abstract global batch of `size` rows, split over the whole mesh as training splits it."""
  shard = parallel.data_sharding(mesh)
  return {key: jax.ShapeDtypeStruct((size,) + value.shape[1:], value.dtype, sharding=shard)
          for key, value in example.items()}


def _compiled_figures(compiled, chip: tpu.Chip, model_flops: float, chips: int) -> dict:
  """Per-chip memory, cost and roofline of a compiled TPU program."""
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  step_flops, step_bytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  compute_s = step_flops / (chip.bf16_tflops * 1e12)
  memory_s = step_bytes / (chip.hbm_gb_per_s * 1e9)
  roofline_s = max(compute_s, memory_s)
  return {
      "argument_bytes": memory.argument_size_in_bytes,
      "output_bytes": memory.output_size_in_bytes,
      "aliased_bytes": memory.alias_size_in_bytes,
      "temp_bytes": memory.temp_size_in_bytes,
      # Arguments and outputs live at once except where donated (aliased); temporaries on top.
      "total_bytes": total,
      "compiler_peak_bytes": getattr(memory, "peak_memory_in_bytes", None),
      "hbm_bytes": int(chip.hbm_gib * GIB),
      "fits": total <= chip.hbm_gib * GIB,
      "flops_per_chip": step_flops,
      "bytes_accessed_per_chip": step_bytes,
      "model_flops": model_flops,
      "roofline_s": roofline_s,
      "bound": "compute" if compute_s >= memory_s else "memory",
      "mfu_bound": (model_flops / chips / (chip.bf16_tflops * 1e12) / roofline_s
                    if roofline_s else None),
      # Above 1: the compiler does more than the model's matmuls, e.g. recomputes
      # activations it chose not to keep (XLA:TPU rematerialises to fit HBM).
      "compiled_over_model_flops": step_flops * chips / model_flops if model_flops else None,
  }


_OUT_OF_MEMORY = re.compile(r"temporaries \(([0-9.]+)([KMGT])\) exceeds available HBM \(([0-9.]+)([KMGT])\)")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _compile(lowered, chip: tpu.Chip, model_flops: float, chips: int) -> dict:
  """The compiled program's figures; or, when the TPU compiler cannot fit it into HBM
  (it refuses with RESOURCE_EXHAUSTED rather than compiling), what it said it needs."""
  try:
    return _compiled_figures(lowered.compile(), chip, model_flops, chips)
  except jax.errors.JaxRuntimeError as error:
    message = str(error).splitlines()[0]
    if "RESOURCE_EXHAUSTED" not in message:
      raise
    figures = {"fits": False, "out_of_memory": message, "hbm_bytes": int(chip.hbm_gib * GIB),
               "model_flops": model_flops}
    found = _OUT_OF_MEMORY.search(message)
    if found:
      figures["required_temp_bytes"] = int(float(found[1]) * _UNITS[found[2]])
      figures["available_bytes"] = int(float(found[3]) * _UNITS[found[4]])
    return figures


def compile_train_step(config: ml_collections.ConfigDict, chip: tpu.Chip, devices: list,
                       progress=print) -> dict:
  """The figures of config's train step compiled for `devices` (a TPU topology's)."""
  mesh = parallel.make_mesh(config.sharding.fsdp, devices)
  example = modality.placeholder_example(config.data)
  _, init, step = engine.build(config, mesh, example)
  state = jax.eval_shape(init, jax.random.PRNGKey(0))
  batch = _batch(example, config.global_batch_size, mesh)
  progress(f"compiling the train step: {config.method}, global batch "
           f"{config.global_batch_size}, mesh {dict(mesh.shape)}, {config.get('precision')}")
  start = time.perf_counter()
  model_flops = flops.train_step_model_flops(config, mesh, step, state, batch, example)
  figures = _compile(step.lower(state, batch), chip, model_flops, len(devices))
  figures.update(state_bytes=sharding.bytes_per_device(state),
                 compile_s=time.perf_counter() - start, mesh=dict(mesh.shape))
  if "roofline_s" in figures:
    steps_per_epoch = _steps_per_epoch(config)
    if steps_per_epoch:
      figures["roofline_epoch_s"] = figures["roofline_s"] * steps_per_epoch
    figures["roofline_run_s"] = figures["roofline_s"] * config.total_steps
  return figures


def compile_extraction(config: ml_collections.ConfigDict, chip: tpu.Chip, devices: list,
                       progress=print) -> dict:
  """The figures of evaluation's feature extraction (frozen backbone, replicated weights,
  eval.batch_size rows over every chip, float32 as evaluation runs) compiled for `devices`."""
  mesh = parallel.make_mesh(1, devices)
  example = modality.placeholder_example(config.data)
  method = methods.get(config.method)
  fields = engine.abstract_model_fields(method, config, mesh, example)
  encode = extraction.encoder(method, config)
  batch = _batch(example, config.eval.batch_size, mesh)
  progress(f"compiling feature extraction: batch {config.eval.batch_size}")
  start = time.perf_counter()
  with conv.target_backend("tpu"):
    lowered = encode.lower(fields["params"], fields["method_state"], batch)
    model_flops = flops.model_flops(encode, fields["params"], fields["method_state"], batch)
  figures = _compile(lowered, chip, model_flops, len(devices))
  figures.update(compile_s=time.perf_counter() - start)
  return figures


def _steps_per_epoch(config) -> float | None:
  preset = presets.for_data_name(config.data.name)
  try:
    return presets.train_examples(preset) / config.global_batch_size if preset else None
  except ConfigError:
    return None


def report(config: ml_collections.ConfigDict, topology: str, with_eval: bool = True,
           progress=print, name: str | None = None) -> dict:
  """Everything the command prints, as one dict; `name` labels the config (its file:arg)."""
  chip, devices = tpu.devices(topology)
  train.check(config, device_count=len(devices))
  result = {"config": name or config.method, "method": config.method,
            "dataset": config.data.name, "topology": topology, "chip": chip.name,
            "chips": len(devices), "global_batch": config.global_batch_size,
            "precision": config.get("precision", "float32"),
            "fsdp": config.sharding.fsdp, "remat": config.model.get("remat", "none"),
            "grad_accumulation": config.get("grad_accumulation", 1),
            "total_steps": config.total_steps, "chip_datasheet": chip.source,
            "train": compile_train_step(config, chip, devices, progress)}
  modes = [m.strip() for m in str(config.eval.modes).split(",")]
  if with_eval and any(m in evals.feature_evaluators() for m in modes):
    result["eval"] = compile_extraction(config, chip, devices, progress)
  return result


def _gib(value) -> str:
  return "-" if value is None else f"{value / GIB:.2f}"


def _duration(seconds) -> str:
  if seconds is None:
    return "-"
  if seconds < 120:
    return f"{seconds:.3g} s"
  if seconds < 7200:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def table(result: dict) -> str:
  """The short human-readable form of `report`."""
  lines = [f"{result['config']} on {result['topology']}: {result['chips']} x {result['chip']}, "
           f"global batch {result['global_batch']}, {result['precision']}, fsdp "
           f"{result['fsdp']}, remat {result['remat']}"]
  head = f"{'step':<8}{'state':>8}{'temp':>8}{'total':>8}{'HBM':>6}  {'fits':<5}" \
         f"{'TFLOP':>8}{'x model':>8}{'GB':>8}  {'roofline':>10}  {'bound':<8}{'MFU<=':>6}  compile"
  lines += [head, "-" * len(head)]
  for name in ("train", "eval"):
    f = result.get(name)
    if not f:
      continue
    if "out_of_memory" in f:
      needed = f.get("required_temp_bytes")
      lines.append(f"{name:<8}{_gib(f.get('state_bytes')):>8}{_gib(needed):>8}{'-':>8}"
                   f"{f['hbm_bytes'] / GIB:>6.0f}  NO   the TPU compiler refused: "
                   f"{f['out_of_memory'][:160]}  ({f['compile_s']:.0f} s)")
      continue
    lines.append(
        f"{name:<8}{_gib(f.get('state_bytes')):>8}{_gib(f['temp_bytes']):>8}"
        f"{_gib(f['total_bytes']):>8}{f['hbm_bytes'] / GIB:>6.0f}  "
        f"{'yes' if f['fits'] else 'NO':<5}{f['flops_per_chip'] / 1e12:>8.3g}"
        f"{f['compiled_over_model_flops'] or 0:>8.2f}"
        f"{f['bytes_accessed_per_chip'] / 1e9:>8.3g}  {_duration(f['roofline_s']):>10}  "
        f"{f['bound']:<8}{(f['mfu_bound'] or 0):>6.0%}  {f['compile_s']:.0f} s")
  t = result["train"]
  lines.append("memory in GiB per chip; FLOPs and bytes per chip per step; x model: compiled "
               "FLOPs over the model's matmul FLOPs (recomputation shows above 1).")
  if "roofline_run_s" in t:
    lines.append(f"Roofline: {_duration(t.get('roofline_epoch_s'))} per epoch, "
                 f"{_duration(t['roofline_run_s'])} for {result['total_steps']} steps (a lower "
                 f"bound). Datasheet: {result['chip_datasheet']}")
  if not t["fits"]:
    lines.append("does not fit: try --config.precision=bfloat16, --config.sharding.fsdp=-1, "
                 "--config.model.remat=full, or a smaller per-chip batch with "
                 "--config.grad_accumulation")
  return "\n".join(lines)


def _config_argument(argv: list[str]) -> str | None:
  """The --config value as given: experiments/dino.py:imagenet2012."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def main(argv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  log.quiet_libraries()
  say = lambda text: print(text, file=sys.stderr, flush=True)
  with log.fail_cleanly():
    result = report(flags.FLAGS.config, flags.FLAGS.topology, flags.FLAGS.eval, say,
                    name=_config_argument(sys.argv))
  print(json.dumps(result, default=lambda v: None if isinstance(v, float) and math.isnan(v)
                   else str(v)))
  print(table(result))


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Experiment file with get_config(), e.g. "
                                  "experiments/dino.py:imagenet2012; override fields as "
                                  "--config.x=y.")
  flags.DEFINE_string("topology", None, "TPU slice, KIND:LAYOUT: v5e:2x2, v5e:8x8, v4:2x2x2, "
                      f"v5p:4x4x4, v6e:4x4 (kinds: {', '.join(tpu.CHIPS)})")
  flags.DEFINE_bool("eval", True, "also compile evaluation's feature extraction")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main)
