"""2-D convolutions (NHWC input, HWIO kernel) with strategies that are fast on XLA:CPU.

Why this file exists: on XLA:CPU the forward convolution and the stride-1 input gradient
run through Eigen's spatial convolution at matmul speed, but the kernel gradient (a
convolution that contracts over the batch) runs 2-3x slower, and the input gradient of a
strided convolution (an lhs-dilated convolution) falls off the fast path completely
(~5 GFLOP/s vs ~150). The "hybrid" strategy keeps XLA's convolution where it is fast and
writes the rest as im2col matmuls. See /tmp/resnet_perf.md (copied into README) for the
numbers.

Strategies (``impl``):
  "xla"     lax.conv_general_dilated and its autodiff. Right on GPU/TPU.
  "im2col"  shifted slices + one matmul, differentiated by autodiff.
  "hybrid"  custom_vjp: forward = XLA conv; kernel gradient = im2col matmul; input
            gradient = XLA conv for stride 1, matmul + fold (col2im) for stride > 1.
  "auto"    "xla" on gpu/tpu, "hybrid" on cpu.
"""

import functools
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, int, Sequence[Tuple[int, int]]]
IMPLS = ("auto", "xla", "im2col", "hybrid")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: str) -> str:
    """Map "auto" to the fastest strategy for the default backend; validate others."""
    if impl not in IMPLS:
        raise ValueError(f"conv impl {impl!r} is not one of {IMPLS}")
    if impl == "auto":
        return "hybrid" if jax.default_backend() == "cpu" else "xla"
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


def _xla_conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=_DIMENSION_NUMBERS)


def _im2col_conv(x, kernel, strides, padding):
    kh, kw, cin, cout = kernel.shape
    patches = extract_patches(x, (kh, kw), strides, padding)
    return jnp.einsum("nhwk,ko->nhwo", patches, kernel.reshape(kh * kw * cin, cout))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _hybrid_conv(x, kernel, strides, padding):
    return _xla_conv(x, kernel, strides, padding)


def _hybrid_fwd(x, kernel, strides, padding):
    return _xla_conv(x, kernel, strides, padding), (x, kernel)


def _hybrid_bwd(strides, padding, residuals, dy):
    x, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    flat_kernel = kernel.reshape(kh * kw * cin, cout)
    patches, fold = jax.vjp(lambda v: extract_patches(v, (kh, kw), strides, padding), x)
    dkernel = jnp.einsum("nhwk,nhwo->ko", patches, dy).reshape(kernel.shape)
    if all(s == 1 for s in strides) and (kh, kw) != (1, 1):
        # Stride-1 input gradient is itself a plain convolution: XLA's fast path.
        dx = jax.vjp(lambda v: _xla_conv(v, kernel, strides, padding), x)[1](dy)[0]
    else:
        (dx,) = fold(jnp.einsum("nhwo,ko->nhwk", dy, flat_kernel))
    return dx, dkernel


_hybrid_conv.defvjp(_hybrid_fwd, _hybrid_bwd)

_IMPL_FUNCTIONS = {"xla": _xla_conv, "im2col": _im2col_conv, "hybrid": _hybrid_conv}


def conv2d(x, kernel, strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
           impl: str = "auto"):
    """Cross-correlation of x [N,H,W,Cin] with kernel [kh,kw,Cin,Cout], no bias."""
    strides = tuple(int(s) for s in strides)
    pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    return _IMPL_FUNCTIONS[resolve_impl(impl)](x, kernel, strides, pads)
