"""Model FLOPs of a jitted function, counted from its jaxpr, and the peak rates of the
devices it runs on: MFU on every backend.

XLA's cost analysis is backend-specific (on GPU it leaves out the convolutions cuDNN
runs, and on CPU the oneDNN calls: models/onednn.py), so MFU here counts what the model
asks for instead: 2 x multiply-adds of every matmul (dot_general) and convolution (XLA's
or oneDNN's) in the traced program, forward and backward, every view and crop, with scans
multiplied by their length. Element-wise work (normalisation, activations, the optimizer)
is not counted, as in the usual definition of MFU; nor is a rematerialised model's
recomputed forward (`train_step_model_flops`): that is work the hardware does, not the
model (it shows in the compiled FLOPs).
"""
import math

import jax
from jax.extend import core

from ssl_jax.models import onednn
from ssl_jax.tools import tpu
from ssl_jax.training import engine

# Dense peak FLOP/s per GPU: (bfloat16, float32 as XLA runs it by default: TF32). Vendor
# datasheets (NVIDIA H100/H200 SXM, A100 SXM). TPU chips: ssl_jax/tools/tpu.py (float32
# matmuls run as bf16 passes there, at the bf16 peak).
PEAKS = (
    ("h200", "NVIDIA H200", 989.4e12, 494.7e12),
    ("h100", "NVIDIA H100 SXM", 989.4e12, 494.7e12),
    ("a100", "NVIDIA A100 SXM", 312e12, 156e12),
)


def device_peak(device_kind: str, dtype: str = "float32") -> tuple[float, str] | None:
  """(peak FLOP/s, what it is) for a device kind (a GPU in PEAKS, a TPU chip in
  tpu.CHIPS), or None if unknown."""
  for chip in tpu.CHIPS.values():
    if device_kind == chip.device_kind:
      return chip.bf16_tflops * 1e12, (f"{chip.name} bf16 (float32 as bf16 passes), "
                                       f"{chip.bf16_tflops:.1f} TFLOP/s (datasheet)")
  kind = device_kind.lower()
  for key, name, bf16, float32 in PEAKS:
    if key in kind:
      peak = bf16 if dtype == "bfloat16" else float32
      label = "bf16" if dtype == "bfloat16" else "float32 as run (TF32)"
      return peak, f"{name} {label}, {peak / 1e12:.1f} TFLOP/s (datasheet)"
  return None


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  out = eqn.outvars[0].aval.shape
  return 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> float:
  # Every output element is a dot over the kernel's window and its input features.
  rhs = eqn.invars[1].aval.shape
  spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
  window = math.prod(rhs[d] for d in spec[2:])
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * window * rhs[spec[1]]


def _sub_jaxprs(value):
  if isinstance(value, core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def jaxpr_flops(jaxpr: core.Jaxpr) -> float:
  """Matmul and convolution FLOPs of a jaxpr, inner jaxprs included (a scan's body
  times its length, the costliest branch of a cond, a while loop's body once)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "ffi_call":
      total += onednn.ffi_call_flops(eqn) or 0.0   # oneDNN's convolutions; 0 for others
    elif name == "cond":
      total += max(jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    else:
      inner = sum(jaxpr_flops(j) for value in eqn.params.values() for j in _sub_jaxprs(value))
      total += inner * (eqn.params.get("length", 1) if name == "scan" else 1)
  return total


def model_flops(fn, *args) -> float:
  """Matmul and convolution FLOPs of one call of `fn(*args)` (traced, not run), everything
  the traced program computes (a jax.checkpoint's recomputation included)."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def train_step_model_flops(config, mesh, step, state, batch, example: dict | None = None) -> float:
  """The model FLOPs of config's train `step` (built by engine.build from config, mesh and
  example) on (state, batch): with config.model.remat set, those of the same step built
  without remat, so that MFU does not count the recomputed forward as model work."""
  if config.model.get("remat", "none") != "none":
    config = config.copy_and_resolve_references()
    config.model.remat = "none"
    _, _, step = engine.build(config, mesh, example)
  return model_flops(step, state, batch)
