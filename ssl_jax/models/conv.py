"""2-D convolutions (NHWC input, HWIO kernel) and how to make them fast on XLA:CPU.

Three things decide ResNet training speed on XLA:CPU (jaxlib 0.10; measured on a 2-core
VM; docs/performance.md has the end-to-end numbers):

1. Whose convolution kernels run. oneDNN's (onednn.py: an FFI library built on the host)
   made the ResNet-18 bench step 1.65x faster than XLA's own, and are the CPU default
   when the program runs on one device and the library is available.
2. Among XLA's own: by default XLA:CPU hands convolutions to YNNPACK, whose forward and
   gradient convolutions are 1.7-1.9x slower over a ResNet-18 train step than Eigen's.
   Pass `compiler_options()` to `jax.jit` (or set `CPU_XLA_FLAGS` in XLA_FLAGS before JAX
   starts) to keep convolutions on Eigen; dots and reductions stay on YNNPACK.
3. The strided convolutions' gradients, which XLA lowers to forms Eigen runs 2-4x slower
   than a plain convolution. impl="fast" rewrites them (see `strided_input_grad` and
   `_pointwise_conv`); everything else is XLA's own convolution and autodiff.

Strategies (``impl``), all the same function with the same parameters:
  "xla"     lax.conv_general_dilated and its autodiff. The right choice on GPU/TPU.
  "fast"    XLA's conv, but 1x1 convs subsample then convolve at stride 1, strided
            kxk convs (custom_vjp) compute the input gradient as stride**2 stride-1
            convs (polyphase) instead of one lhs-dilated conv, and kxk convs with an
            output of at most TINY_OUTPUT_PIXELS pixels use im2col.
  "onednn"  oneDNN's convolution and its two gradients (onednn.py), float32 on CPU; other
            dtypes take "fast". An error where the library cannot be built.
  "im2col"  shifted slices + one matmul, differentiated by autodiff. Portable reference;
            slower than both above on XLA:CPU (the patch tensor is 9x the activation).
  "auto"    on CPU, "onednn" for a program on one device when the library is available,
            else "fast"; "xla" elsewhere. The platform and device count are those of the
            program being traced (`target_backend`, which the train step sets from its
            mesh), else JAX's default backend and its device count.
"""

import contextlib
import contextvars
import functools
from typing import Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from ssl_jax.core.errors import ConfigError
from ssl_jax.models import onednn

Padding = Union[str, int, Sequence[Tuple[int, int]]]
IMPLS = ("auto", "xla", "im2col", "fast", "onednn")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# Keep convolutions off YNNPACK (on Eigen) in XLA:CPU, leaving YNNPACK its dots and
# reductions. As an XLA flag it must be in XLA_FLAGS before JAX creates its CPU backend
# (before `import jax` to be safe); as a per-jit option it must name the whole list.
CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def compiler_options(backend: Optional[str] = None) -> Dict[str, str]:
  """Options for `jax.jit(..., compiler_options=...)` that make convolutions fast on the
  given (default: JAX's default) backend; empty off CPU. Overrides XLA_FLAGS' setting of
  the same option for that jit only."""
  if (backend or jax.default_backend()) == "cpu":
    return dict(CPU_COMPILER_OPTIONS)
  return {}


_TARGET = contextvars.ContextVar("conv_target", default=(None, None))


@contextlib.contextmanager
def target_backend(backend: Optional[str], devices: Optional[int] = None):
  """Within it, "auto" resolves for `backend` ("cpu", "gpu", "tpu"; None: JAX's default)
  and a program over `devices` devices (None: JAX's device count) rather than for this
  host: a program may be traced for devices this host does not have (a TPU slice's,
  compiled ahead of time on a CPU host by ssl_jax/tools/aot.py), and the CPU strategy
  must not leak into it."""
  token = _TARGET.set((backend, devices))
  try:
    yield
  finally:
    _TARGET.reset(token)


def resolve_impl(impl: str) -> str:
  """Map "auto" to the fastest strategy for the target backend and device count
  (`target_backend`, else JAX's default); validate others ("onednn" needs its library:
  ConfigError with the reason where it cannot be built)."""
  if impl not in IMPLS:
    raise ConfigError(f"model.conv_impl={impl!r} is not one of {IMPLS}")
  backend, devices = _TARGET.get()
  platform = backend or jax.default_backend()
  if impl == "auto":
    if platform != "cpu":
      return "xla"
    # One device only: an FFI call has no partitioning rule (onednn.py).
    single = (devices if devices is not None else jax.device_count()) == 1
    return "onednn" if single and onednn.available() else "fast"
  if impl == "onednn" and platform != "cpu":
    raise ConfigError(f"model.conv_impl='onednn' runs on CPU only, not {platform}: use "
                      f"'auto' or 'xla'")
  if impl == "onednn" and not onednn.available():
    raise ConfigError(f"model.conv_impl='onednn' but oneDNN convolutions are unavailable: "
                      f"{onednn.unavailable_reason()}")
  return impl


def explicit_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                     strides: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
  """Turn "SAME"/"VALID", an int, or per-dim (low, high) pairs into explicit pairs."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(spatial, kernel, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * len(spatial)
  pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pairs) != len(spatial):
    raise ValueError(f"padding {padding!r} needs one (low, high) pair per spatial dim")
  return pairs


def extract_patches(x, kernel_size, strides, padding):
  """[N,H,W,C] -> [N,Ho,Wo,kh*kw*C], patch index ordered (i, j, c) like an HWIO kernel."""
  (kh, kw), (sh, sw) = kernel_size, strides
  n, _, _, c = x.shape
  x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  taps = [
      lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                (1, sh, sw, 1))
      for i in range(kh) for j in range(kw)
  ]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _output_size(size, kernel_size, stride, pad):
  return (size + pad[0] + pad[1] - kernel_size) // stride + 1


def _xla_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=_DIMENSION_NUMBERS)


def _im2col_conv(x, kernel, strides, padding):
  kh, kw, cin, cout = kernel.shape
  patches = extract_patches(x, (kh, kw), strides, padding)
  return jnp.einsum("nhwk,ko->nhwo", patches, kernel.reshape(kh * kw * cin, cout))


def onednn_takes(dtype) -> bool:
  """Whether "onednn" runs a convolution of this dtype (float32); others take "fast"."""
  return jnp.dtype(dtype) == jnp.float32


def _onednn_conv(x, kernel, strides, padding):
  if not (onednn_takes(x.dtype) and onednn_takes(kernel.dtype)):
    return _fast_conv(x, kernel, strides, padding)
  return onednn.conv(x, kernel, strides, padding)


def _pointwise_conv(x, kernel, strides, padding):
  """1x1 convolution: subsample, then a stride-1 conv. XLA:CPU's gradients of a strided 1x1
  conv are 2-4x slower than this form's (a 1x1 conv and a strided pad)."""
  x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  x = x[:, ::strides[0], ::strides[1], :]
  return _xla_conv(x, kernel, (1, 1), ((0, 0), (0, 0)))


def _phase_plan(size, kernel_size, stride, pad_low, out_size):
  """For each residue a of the kernel tap index mod stride: the input rows it feeds
  (first output row m0 and count) and the padding of the stride-1 sub-convolution."""
  plans = []
  for a in range(stride):
    taps = len(range(a, kernel_size, stride))
    m0 = -((a - pad_low) // stride)
    length = (size - 1 + pad_low - a) // stride - m0 + 1
    if taps and length > 0:
      p_lo = taps - 1 - m0
      plans.append((a, m0, length, (p_lo, length + taps - 1 - out_size - p_lo)))
  return plans


def strided_input_grad(dy, kernel, x_shape, strides, padding):
  """Input gradient of a strided conv as stride**2 stride-1 convs (polyphase).

  XLA lowers it to an lhs-dilated convolution, which XLA:CPU runs ~4x slower than a plain
  one. Input row u = s*m + a - pad_low only receives kernel taps i = a, a+s, ...; those
  form a stride-1 correlation of dy with the flipped sub-kernel. Phases are interleaved
  with interior padding, which XLA fuses into one pass.
  """
  _, h, w, _ = x_shape
  (sh, sw), ((pad_h, _), (pad_w, _)) = strides, padding
  dx = jnp.zeros(x_shape, dy.dtype)
  zero = jnp.zeros((), dy.dtype)
  for a, m0h, len_h, sub_pad_h in _phase_plan(h, kernel.shape[0], sh, pad_h, dy.shape[1]):
    for b, m0w, len_w, sub_pad_w in _phase_plan(w, kernel.shape[1], sw, pad_w, dy.shape[2]):
      sub_kernel = jnp.swapaxes(kernel[a::sh, b::sw][::-1, ::-1], 2, 3)
      part = _xla_conv(dy, sub_kernel, (1, 1), (sub_pad_h, sub_pad_w))
      u0, v0 = sh * m0h + a - pad_h, sw * m0w + b - pad_w
      dx = dx + lax.pad(part, zero, ((0, 0, 0), (u0, h - u0 - sh * (len_h - 1) - 1, sh - 1),
                                     (v0, w - v0 - sw * (len_w - 1) - 1, sw - 1), (0, 0, 0)))
  return dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided_conv(x, kernel, strides, padding):
  return _xla_conv(x, kernel, strides, padding)


def _strided_conv_fwd(x, kernel, strides, padding):
  return _xla_conv(x, kernel, strides, padding), (x, kernel)


def _strided_conv_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  dkernel = jax.vjp(lambda k: _xla_conv(x, k, strides, padding), kernel)[1](dy)[0]
  return strided_input_grad(dy, kernel, x.shape, strides, padding), dkernel


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


# Output maps this small (ResNet's last stage at low resolution) go through im2col:
# Eigen's kxk convolution and its gradients there ran 6-47x slower than one matmul
# (3x3, 2x2 map, batch 512: 690 ms against 49 ms at 256 channels).
TINY_OUTPUT_PIXELS = 4


def _fast_conv(x, kernel, strides, padding):
  if kernel.shape[:2] == (1, 1):
    return _pointwise_conv(x, kernel, strides, padding)
  out_h, out_w = (_output_size(x.shape[1 + i], kernel.shape[i], strides[i], padding[i])
                  for i in range(2))
  if out_h * out_w <= TINY_OUTPUT_PIXELS:
    return _im2col_conv(x, kernel, strides, padding)
  if any(s > 1 for s in strides):
    return _strided_conv(x, kernel, strides, padding)
  return _xla_conv(x, kernel, strides, padding)


_IMPL_FUNCTIONS = {"xla": _xla_conv, "im2col": _im2col_conv, "fast": _fast_conv,
                   "onednn": _onednn_conv}


def conv2d(x, kernel, strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
           impl: str = "auto"):
  """Cross-correlation of x [N,H,W,Cin] with kernel [kh,kw,Cin,Cout], no bias."""
  strides = tuple(int(s) for s in strides)
  pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  return _IMPL_FUNCTIONS[resolve_impl(impl)](x, kernel, strides, pads)
