"""oneDNN convolutions on XLA:CPU: a small C++ library of XLA FFI handlers, built on the host.

Why: XLA:CPU runs convolutions in Eigen (YNNPACK's are slower still) and computes their
kernel gradients through layout transposes. oneDNN's direct convolutions (what PyTorch
uses on CPU) are faster: on a 2-core AMD EPYC VM the ResNet-18 bench step went from
6.46 s to 3.91-3.94 s and the README demo's step from 0.73-0.80 s to 0.44-0.45 s
(docs/performance.md).
jaxlib links oneDNN but this build of XLA never emits oneDNN convolutions, so
`onednn_conv.cc` (next to this file) wraps them as three FFI targets: forward, input
gradient, kernel gradient, on NHWC/HWIO float32 buffers; `conv` is the differentiable
function over them.

The library is compiled on first use with the host's C++ compiler against jaxlib's FFI
headers and the system's oneDNN (`libdnnl-dev` on Debian/Ubuntu; scripts/setup.sh
installs both and builds it), and cached under SSL_JAX_CACHE_DIR (default
~/.cache/ssl_jax) by a hash of the source, jaxlib's version and oneDNN's. Without a
compiler or oneDNN, `available()` is False, one hint goes to stderr, and convolutions
stay on XLA's "fast" path (conv.py). SSL_JAX_ONEDNN=0 turns it off.

    python -m ssl_jax.models.onednn     # build now; print where the library is, or why not

Only one device per process uses it (conv.py's "auto"): an FFI call has no partitioning
rule, so under a multi-device mesh XLA would gather its operands onto every device.
"""
import ctypes
import functools
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

ENV = "SSL_JAX_ONEDNN"
CACHE_ENV = "SSL_JAX_CACHE_DIR"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
HEADER_DIRS = ("/usr/include", "/usr/local/include")
HEADER = os.path.join("oneapi", "dnnl", "dnnl.hpp")
INSTALL_HINT = ("apt-get install g++ libdnnl-dev (Debian/Ubuntu), then "
                "python -m ssl_jax.models.onednn")
# FFI target name -> the library's handler symbol.
TARGETS = {
    "ssl_jax_onednn_conv_forward": "SslJaxOneDnnConvForward",
    "ssl_jax_onednn_conv_backward_data": "SslJaxOneDnnConvBackwardData",
    "ssl_jax_onednn_conv_backward_weights": "SslJaxOneDnnConvBackwardWeights",
}


class Unavailable(RuntimeError):
  """The oneDNN library cannot be built or loaded here (the message says why)."""


def cache_dir() -> str:
  default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "ssl_jax")
  return os.environ.get(CACHE_ENV) or default


def _compiler() -> str | None:
  return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _onednn_header() -> str | None:
  for directory in HEADER_DIRS:
    path = os.path.join(directory, HEADER)
    if os.path.isfile(path):
      return path
  return None


def library_path() -> str:
  """Where the library for this source, jaxlib and oneDNN is (or will be) cached."""
  digest = hashlib.sha256()
  with open(SOURCE, "rb") as source:
    digest.update(source.read())
  digest.update(jaxlib.__version__.encode())
  header = _onednn_header()
  if header:
    config = os.path.join(os.path.dirname(header), "dnnl_version.h")
    if os.path.isfile(config):
      with open(config, "rb") as version:
        digest.update(version.read())
  return os.path.join(cache_dir(), f"onednn_conv-{digest.hexdigest()[:16]}.so")


def build(path: str | None = None) -> str:
  """Compile the library to `path` (default library_path()); returns the path. Raises
  Unavailable with the reason when there is no compiler, no oneDNN, or it fails."""
  path = path or library_path()
  compiler = _compiler()
  if compiler is None:
    raise Unavailable(f"no C++ compiler (g++) on PATH; {INSTALL_HINT}")
  if _onednn_header() is None:
    raise Unavailable(f"oneDNN's headers ({HEADER}) are not installed; {INSTALL_HINT}")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Build beside the target, then rename: concurrent processes (test workers) each
  # build their own file and the last rename wins, never a half-written library.
  fd, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
             f"-I{jax.ffi.include_dir()}", SOURCE, "-o", partial, "-ldnnl", "-fopenmp"]
  try:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise Unavailable(f"building {SOURCE} failed ({' '.join(command)}):\n"
                        f"{result.stderr[-2000:]}")
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path


def _load() -> None:
  path = library_path()
  if not os.path.isfile(path):
    print(f"ssl_jax: building oneDNN's convolutions for XLA:CPU into {path} (once, a few "
          f"seconds)", file=sys.stderr)
    build(path)
  try:
    library = ctypes.cdll.LoadLibrary(path)
  except OSError as error:
    raise Unavailable(f"cannot load {path}: {error}") from error
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")


_STATE = {"checked": False, "reason": None}


def unavailable_reason() -> str | None:
  """None when the library is built, loaded and registered (doing that on the first
  call), else why not."""
  if not _STATE["checked"]:
    _STATE["checked"] = True
    if os.environ.get(ENV) == "0":
      _STATE["reason"] = f"{ENV}=0"
    else:
      try:
        _load()
      except Unavailable as error:
        _STATE["reason"] = str(error)
        print(f"ssl_jax: oneDNN convolutions are off ({error}); convolutions on CPU use "
              f"XLA's, ~1.6-1.8x slower for a ResNet step. {ENV}=0 silences this.",
              file=sys.stderr)
  return _STATE["reason"]


def available() -> bool:
  return unavailable_reason() is None


def _attributes(strides, padding) -> dict:
  (top, bottom), (left, right) = padding
  return {"strides": np.asarray(strides, np.int64),
          "padding": np.asarray([top, bottom, left, right], np.int64)}


def _call(target, result_shape, a, b, strides, padding):
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(result_shape, jnp.float32),
                          vmap_method="sequential")(a, b, **_attributes(strides, padding))


def output_shape(x_shape, kernel_shape, strides, padding) -> tuple:
  n, h, w, _ = x_shape
  kh, kw, _, out = kernel_shape
  (top, bottom), (left, right) = padding
  return (n, (h + top + bottom - kh) // strides[0] + 1,
          (w + left + right - kw) // strides[1] + 1, out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, kernel, strides, padding):
  """Cross-correlation of float32 x [N,H,W,C] with kernel [kh,kw,C,O]; strides (sh, sw),
  padding ((top, bottom), (left, right)), as lax.conv_general_dilated with NHWC/HWIO.
  Call `available()` first."""
  return _call("ssl_jax_onednn_conv_forward",
               output_shape(x.shape, kernel.shape, strides, padding), x, kernel, strides,
               padding)


def _conv_forward(x, kernel, strides, padding):
  return conv(x, kernel, strides, padding), (x, kernel)


def _conv_backward(strides, padding, residuals, dy):
  x, kernel = residuals
  dx = _call("ssl_jax_onednn_conv_backward_data", x.shape, dy, kernel, strides, padding)
  dkernel = _call("ssl_jax_onednn_conv_backward_weights", kernel.shape, x, dy, strides,
                  padding)
  return dx, dkernel


conv.defvjp(_conv_forward, _conv_backward)


def ffi_call_flops(eqn) -> float | None:
  """2 x multiply-adds of one of this module's FFI calls in a jaxpr (the same count for
  the forward, input-gradient and kernel-gradient calls); None for any other equation."""
  if eqn.primitive.name != "ffi_call" or eqn.params.get("target_name") not in TARGETS:
    return None
  target = eqn.params["target_name"]
  shapes = [v.aval.shape for v in eqn.invars] + [v.aval.shape for v in eqn.outvars]
  if target == "ssl_jax_onednn_conv_forward":
    _, kernel, y = shapes
  elif target == "ssl_jax_onednn_conv_backward_data":
    y, kernel, _ = shapes
  else:
    _, y, kernel = shapes
  return 2.0 * math.prod(y) * math.prod(kernel[:3])


def main() -> None:
  if os.environ.get(ENV) == "0":
    print(f"{ENV}=0: oneDNN convolutions are off")
    return
  try:
    path = build()
  except Unavailable as error:
    print(f"oneDNN convolutions unavailable: {error}", file=sys.stderr)
    sys.exit(1)
  _STATE.update(checked=False, reason=None)
  reason = unavailable_reason()
  if reason:
    print(f"built {path} but: {reason}", file=sys.stderr)
    sys.exit(1)
  print(f"oneDNN convolutions: {path}")


if __name__ == "__main__":
  main()
