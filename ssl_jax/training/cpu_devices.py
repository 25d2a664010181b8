"""How many devices a CPU host is split into: the mesh's size when a run trains on CPU.

XLA:CPU runs one program per device and parallelises inside each operation. A ViT's or a
text transformer's operations, at the sizes one trains on a CPU, are too small to keep
several cores busy that way; split into one device per core, the batch is data parallel
over the cores and each device's program runs beside the others'. On 2 cores the bench's
MAE and BERT steps then take 0.82-0.92x the time (docs/performance.md, "One XLA:CPU
device per core"). A ResNet stays on one device: its convolutions run in oneDNN there
(models/onednn.py), which is faster than XLA's on one device per core.

`config.sharding.cpu_devices`: N > 0 asks for N devices; 0 (the default) asks for one per
core where every backbone's family says so (models.device_per_core): the largest count up
to the cores, and at most MAX_DEFAULT_DEVICES, that divides the batch; one device
otherwise. The choice is made once, at a command's start, before jax creates its CPU
backend (jax's `jax_num_cpu_devices`). 0 leaves jax's count alone where the user set one
(XLA_FLAGS' --xla_force_host_platform_device_count, JAX_NUM_CPU_DEVICES), where the run
is not on the CPU (JAX_PLATFORMS, or an accelerator on the host), on several hosts, and
with sharding.fsdp other than 1. The train state and the data stream do not depend on the
count, so a run resumes under any (resume.SAFE_TO_CHANGE).
"""
import glob
import os
import sys
from typing import Callable, Mapping

import jax
import ml_collections

from ssl_jax import ACCELERATOR_DEVICE_FILES, models
from ssl_jax.core import parallel
from ssl_jax.core.errors import ConfigError

FLAG = "--xla_force_host_platform_device_count"
# The default's most devices: every device holds a copy of the train state, and the gain
# was measured on 2 cores only; on a bigger host, sharding.cpu_devices asks for more.
MAX_DEFAULT_DEVICES = 8


def host_cores() -> int:
  """The cores this process may run on (its affinity, which taskset and containers set)."""
  return len(os.sched_getaffinity(0))


def runs_on_cpu(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether jax's default backend here will be the CPU, decided without starting jax:
  JAX_PLATFORMS when it is set (its first entry), else no accelerator device on the host."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_FILES)


def choose(config: ml_collections.ConfigDict, cores: int,
           environ: Mapping[str, str] = os.environ,
           user_count: int = -1) -> tuple[int | None, str]:
  """(count, why): the CPU device count this run asks for, or None to leave jax's own.
  `user_count` is jax's jax_num_cpu_devices as set before (-1: not set)."""
  layout = config.get("sharding", ml_collections.ConfigDict())
  requested = int(layout.get("cpu_devices", 0))
  if requested:
    return requested, f"sharding.cpu_devices={requested}"
  if FLAG in environ.get("XLA_FLAGS", "") or user_count >= 0:
    return None, "the count set by XLA_FLAGS or JAX_NUM_CPU_DEVICES"
  if not runs_on_cpu(environ):
    return None, "not on the CPU"
  if any(name in environ for name in parallel.MULTIHOST_VARIABLES) or \
      environ.get("SSL_JAX_DISTRIBUTED") == "1":
    return None, "several hosts"
  if not models.device_per_core(config):
    return None, "one device for this backbone"
  if layout.get("fsdp", 1) != 1:
    return None, f"sharding.fsdp={layout.fsdp}: set sharding.cpu_devices for its mesh"
  # Each device takes an equal share of every micro-batch.
  micro_batch = config.global_batch_size // config.get("grad_accumulation", 1)
  most = min(max(cores, 1), MAX_DEFAULT_DEVICES)
  count = max(d for d in range(1, most + 1) if micro_batch % d == 0)
  if count == 1:
    return None, f"no count from 2 to {most} divides the batch of {micro_batch}"
  families = "+".join(config[name].name for name in ("model", "text_model") if name in config)
  return count, (f"one per core for a {families} backbone" if count == cores else
                 f"a {families} backbone on {cores} cores: {count}, at most "
                 f"{MAX_DEFAULT_DEVICES} and dividing the batch of {micro_batch}")


def _to_stderr(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def apply(config: ml_collections.ConfigDict, note: Callable[[str], None] = _to_stderr) -> None:
  """Sets jax's CPU device count as `choose` says, once, before jax starts its backends
  (a command's first step). Where jax has started already, an explicit
  sharding.cpu_devices that differs from the host's count is a ConfigError; the default
  leaves the count as it is."""
  count, why = choose(config, host_cores(), user_count=jax.config.jax_num_cpu_devices)
  if count is None:
    return
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # jax has started: the count is fixed
    started = len(jax.devices("cpu"))
    if started != count and int(config.sharding.get("cpu_devices", 0)):
      raise ConfigError(f"sharding.cpu_devices={count}, but jax started with {started} CPU "
                        "device(s) already: set it before any jax computation (the commands "
                        f"do), or use XLA_FLAGS={FLAG}={count}") from None
    return
  note(f"CPU: {count} device{'s' if count > 1 else ''} ({why}; config.sharding.cpu_devices "
       "sets another count)")
