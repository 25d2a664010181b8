"""Device mesh, shardings, multi-host start-up, and host batch -> global jax.Array.

Everything runs as one `jax.jit` over a (data, fsdp) mesh. The batch is split over
both axes (every device its own rows), so global-batch quantities (the contrastive
similarity matrix, BatchNorm statistics) come out right with no hand-written
collectives: XLA inserts them. The train state is replicated (fsdp = 1, the default) or
split over 'fsdp' by rules (ssl_jax/core/sharding.py).
"""
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.core import validate
from ssl_jax.core.errors import ConfigError


MULTIHOST_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
DATA_AXIS = "data"
FSDP_AXIS = "fsdp"


def initialize_distributed() -> None:
  """Starts multi-host JAX when the environment asks for it; a no-op on one host.

  On Cloud TPU pods `jax.distributed.initialize()` discovers its peers itself, set
  SSL_JAX_DISTRIBUTED=1 there. Elsewhere (GPU clusters, local tests) set
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  """
  given = [name for name in MULTIHOST_VARIABLES if name in os.environ]
  if given:
    missing = [name for name in MULTIHOST_VARIABLES if name not in os.environ]
    if missing:
      raise ConfigError(f"multi-host start-up needs {', '.join(MULTIHOST_VARIABLES)}; "
                        f"{', '.join(given)} set but not {', '.join(missing)} (set all three, "
                        "or none on one host)")
    count, index = os.environ["JAX_NUM_PROCESSES"], os.environ["JAX_PROCESS_ID"]
    if not (count.isdigit() and index.isdigit() and int(index) < int(count)):
      raise ConfigError(f"JAX_NUM_PROCESSES={count!r} and JAX_PROCESS_ID={index!r}: expected "
                        "whole numbers with 0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES")
    jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(count), process_id=int(index))
  elif os.environ.get("SSL_JAX_DISTRIBUTED") == "1":
    jax.distributed.initialize()


def fsdp_size(fsdp, device_count: int) -> int:
  """config.sharding.fsdp resolved (-1: every device); ConfigError unless it divides."""
  validate.number("sharding.fsdp", fsdp, low=-1, integer=True)
  if fsdp == -1:
    return device_count
  if fsdp == 0 or device_count % fsdp:
    raise ConfigError(
        f"sharding.fsdp={fsdp} must divide the device count ({device_count}): the mesh is "
        f"(data={device_count}//fsdp, fsdp); try one of "
        f"{[d for d in range(1, device_count + 1) if device_count % d == 0]} or -1 (all)")
  return fsdp


def make_mesh(fsdp: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """The (data, fsdp) mesh over every device of every process (Auto sharding): `fsdp`
  devices per group split the sharded state leaves (-1: all of them; config.sharding.fsdp),
  devices // fsdp such groups. `devices` (default: jax.devices()) may be another
  platform's, e.g. a TPU topology's for compiling ahead of time (ssl_jax/tools/aot.py)."""
  devices = list(jax.devices() if devices is None else devices)
  fsdp = fsdp_size(fsdp, len(devices))
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh((len(devices) // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS),
                       axis_types=(auto, auto), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every axis of the mesh."""
  return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_global_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  devices = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % devices:
    raise ConfigError(
        f"global_batch_size={global_batch_size} must be a positive multiple of the device "
        f"count ({devices}); try {max(devices, global_batch_size // devices * devices)}")


def to_global(batch: Any, mesh: Mesh) -> Any:
  """Host-local batch (this process's rows) -> global arrays sharded on 'data'."""
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


def to_host(tree: Any) -> Any:
  """Global arrays -> full numpy arrays on every process (gathers across hosts)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
  """True if `flag` is true on any process (e.g. one host received SIGTERM)."""
  if jax.process_count() == 1:
    return flag
  flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
  return bool(np.max(flags))
