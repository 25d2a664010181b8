"""Rematerialisation of a network's blocks (config.model.remat): keep fewer activations
for the backward pass and recompute the rest, trading compute for memory.

  "none"  store every activation (the default)
  "full"  store only each block's input; recompute the whole block in the backward pass
  "dots"  also store the block's matmul outputs (jax.checkpoint_policies.
          dots_with_no_batch_dims_saveable) and convolution outputs (tagged CONV by
          models/resnet.py): recompute only the cheap element-wise work
"""
import contextlib
import io
import math
import re

import flax.linen as nn
import jax
from jax import ad_checkpoint

from ssl_jax.core.errors import ConfigError

CONV = "conv_output"  # ad_checkpoint.checkpoint_name of a convolution's output
POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
            "dots": jax.checkpoint_policies.save_from_both_policies(
                jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                jax.checkpoint_policies.save_only_these_names(CONV))}


def wrap(block_class: type[nn.Module], remat: str, static_argnums: tuple[int, ...]):
  """`block_class`, or its nn.remat under `remat`'s policy. `static_argnums` index the
  block's __call__ arguments with `self` as 0 (the `train` flag must be static)."""
  if remat == "none":
    return block_class
  check(remat)
  return nn.remat(block_class, policy=POLICIES[remat], static_argnums=static_argnums)


def check(remat: str) -> None:
  """ConfigError unless config.model.remat names a policy."""
  if remat != "none" and remat not in POLICIES:
    raise ConfigError(f"model.remat={remat!r}; expected none, {', '.join(POLICIES)}")


_RESIDUAL = re.compile(r"^(?P<kind>[a-z]+?)(?P<bits>\d*)\[(?P<shape>[\d,]*)\]")


def residual_bytes(f, *args) -> int:
  """Bytes of the values that reverse-mode differentiation of `f` at `args` keeps for the
  backward pass (jax.ad_checkpoint.print_saved_residuals), not counting `args` themselves
  (the parameters are held anyway): what remat shrinks, whatever the backend's allocator
  then makes of it."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    ad_checkpoint.print_saved_residuals(f, *args)
  total = 0
  for line in out.getvalue().splitlines():
    match = _RESIDUAL.match(line.strip())
    if match and "from the argument" not in line:
      size = math.prod(int(d) for d in match["shape"].split(",") if d)
      total += size * max(int(match["bits"] or 8) // 8, 1)
  return total
