"""TPU slices one can compile for without having one: the chips' datasheet numbers and
a topology's devices from libtpu's compiler (`pip install -e ".[tpu]"`).

A topology is written as Cloud TPU names it, KIND:LAYOUT: "v5e:2x2" (4 chips), "v5e:8x8"
(a v5e-64), "v4:2x2x2" (8 chips), "v5p:4x4x4", "v6e:4x4". v4 and v5p run their two
TensorCores per chip as one device (megacore), so a device is a chip on every kind here.
"""
import dataclasses
import glob
import importlib.util
import os
import re

import ssl_jax
from ssl_jax.core.errors import UserError

TPU_INSTALL = 'pip install -e ".[tpu]"'


class TopologyError(UserError, ValueError):
  """A topology this host cannot compile for: an unknown kind or layout, or no libtpu."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One chip's datasheet numbers (dense bfloat16 matmul peak; XLA's default precision
  on TPU runs float32 matmuls as bfloat16 passes, so this is the peak either way)."""
  name: str
  device_kind: str          # jax's Device.device_kind for it
  hbm_gib: float            # high-bandwidth memory per chip
  hbm_gb_per_s: float       # its bandwidth, 1e9 bytes/s
  bf16_tflops: float        # peak, 1e12 FLOP/s
  megacore: bool            # two TensorCores presented as one device
  source: str               # where the numbers come from


# Google Cloud's TPU system-architecture pages, one per generation.
CHIPS = {
    "v4": Chip("TPU v4", "TPU v4", 32, 1200, 275, True, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", "TPU v5 lite", 16, 819, 197, False,
                "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", "TPU v5", 95, 2765, 459, True, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e", "TPU v6 lite", 32, 1640, 918, False,
                "https://cloud.google.com/tpu/docs/v6e"),
}
_TOPOLOGY = re.compile(r"^(v[0-9a-z]+):([0-9]+(?:x[0-9]+){1,2})$")


def parse(topology: str) -> tuple[str, Chip, int]:
  """"v5e:8x8" -> ("v5e", its Chip, 64 chips); TopologyError naming the valid forms."""
  match = _TOPOLOGY.match(topology.strip())
  if not match:
    raise TopologyError(f"--topology={topology!r}: expected KIND:LAYOUT such as v5e:2x2, "
                        f"v5e:8x8, v4:2x2x2 or v5p:4x4x4; kinds: {', '.join(CHIPS)}")
  kind, layout = match.groups()
  if kind not in CHIPS:
    raise TopologyError(f"--topology={topology!r}: unknown TPU kind {kind!r}; known kinds: "
                        f"{', '.join(CHIPS)} (datasheet numbers in ssl_jax/tools/tpu.py)")
  chips = 1
  for side in layout.split("x"):
    chips *= int(side)
  return kind, CHIPS[kind], chips


def require_libtpu() -> None:
  """TopologyError naming the install command when libtpu (TPU compiler) is missing."""
  if importlib.util.find_spec("libtpu") is None:
    raise TopologyError("compiling for a TPU needs libtpu, the TPU compiler, which is not "
                        f"installed; install it with: {TPU_INSTALL}")


def devices(topology: str) -> tuple[Chip, list]:
  """(chip, the topology's devices, one per chip) for meshes and compilation on this host."""
  kind, chip, chips = parse(topology)
  require_libtpu()
  if not any(glob.glob(pattern) for pattern in ssl_jax.ACCELERATOR_DEVICE_FILES):
    # No TPU here: tell libtpu not to look for this host's slice (its metadata server,
    # worker names, host bounds), which it would otherwise report as a page of errors, and
    # that with no chips to guard, several processes may compile at once (it otherwise
    # holds /tmp/libtpu_lockfile for one process).
    for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                        ("TPU_HOST_BOUNDS", "1,1,1"), ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
      os.environ.setdefault(name, value)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    found = topologies.get_topology_desc(
        platform="tpu", topology_name=topology.strip(),
        chip_config_name="megacore" if chip.megacore else "default").devices
  except Exception as error:  # libtpu says why: a layout it does not build, for instance
    raise TopologyError(f"--topology={topology!r}: libtpu cannot build it: "
                        f"{str(error).splitlines()[0]}") from None
  if len(found) != chips:
    raise TopologyError(f"--topology={topology!r}: libtpu made {len(found)} devices for "
                        f"{chips} chips")
  return chip, list(found)
