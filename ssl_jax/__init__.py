"""ssl_jax: self-supervised pretraining in JAX/Flax.

Importing the package before jax sets XLA:CPU flags that make convolution training
faster on CPU (why: ssl_jax/models/conv.py); they do nothing on GPU/TPU.
XLA reads XLA_FLAGS once, when jax starts, so this only works if ssl_jax is imported
first (every entrypoint here does). Set SSL_JAX_DEFAULT_XLA_FLAGS=0 to opt out.
On a host with libtpu installed but no accelerator it also defaults JAX_PLATFORMS to cpu
(see _keep_jax_off_a_missing_tpu). A command of this project (`python -m ssl_jax.train`,
`python -m experiments.NAME`, ...) re-executes itself once under tcmalloc when the host has
it (why: ssl_jax/core/host_malloc.py; SSL_JAX_TCMALLOC=0 opts out).
"""
import glob
import importlib.util
import os
import sys

from ssl_jax.core import host_malloc

# The package's layers, lowest first. A module may import from its own layer or any lower
# one, never a higher one, and no import may close a cycle (tests/core/test_layers.py
# parses every import, function-local ones too). Why this order: docs/architecture.md.
LAYERS = (
    ("core", ("ssl_jax.core",)),                # errors, config checks, registry, run dir, log, mesh
    ("data", ("ssl_jax.data",)),                # sources, loaders, presets, builders, on-device augmentation
    ("models", ("ssl_jax.models",)),            # backbone families and heads
    ("methods", ("ssl_jax.methods",)),          # the objectives, and methods/lib/ they share
    ("training", ("ssl_jax.training",)),        # the train step, optimizer, checkpoints, resume, checks
    ("evals", ("ssl_jax.evals",)),              # evaluators, and evals/lib/ (extraction, monitor)
    ("commands", ("ssl_jax.train", "ssl_jax.evaluate", "ssl_jax.export")),  # python -m entrypoints
    ("tools", ("ssl_jax.tools",)),              # bench, plot, flops
    ("experiments", ("experiments",)),          # recipes: a method composed with a dataset preset
)

# Keep XLA:CPU's convolutions on Eigen rather than YNNPACK (dots and reductions stay on
# YNNPACK): ~1.4x faster fwd+bwd for the demo ResNet on 2 cores. The same string as
# ssl_jax.models.conv.CPU_XLA_FLAGS, repeated because this module must not import jax.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def _set_default_xla_flags() -> None:
  if os.environ.get("SSL_JAX_DEFAULT_XLA_FLAGS") == "0":
    return
  if "jax" in sys.modules:  # too late: XLA read its flags when jax started
    if any(flag.split("=")[0] not in os.environ.get("XLA_FLAGS", "") for flag in CPU_XLA_FLAGS):
      import warnings  # pylint: disable=import-outside-toplevel
      warnings.warn("jax was imported before ssl_jax, so ssl_jax's XLA:CPU flags "
                    f"({' '.join(CPU_XLA_FLAGS)}) are not set: convolutions on CPU run ~1.4x "
                    "slower. Import ssl_jax first, or put the flags in XLA_FLAGS yourself "
                    "(SSL_JAX_DEFAULT_XLA_FLAGS=0 silences this).", stacklevel=3)
    return
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_XLA_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags


# Device files a host with an accelerator has: TPU chips (/dev/accel*, /dev/vfio/N), NVIDIA
# and AMD GPUs (as jax's own hardware checks look for them).
ACCELERATOR_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia*", "/dev/kfd",
                            "/dev/dxg")


def _keep_jax_off_a_missing_tpu() -> None:
  """With libtpu installed (the [tpu] extra: compiling for TPUs ahead of time,
  ssl_jax/tools/aot.py) on a host with no accelerator at all, every jax start tries the TPU
  runtime and prints a page of errors before falling back to the CPU. There, and only
  there, default JAX_PLATFORMS to "cpu"; a host with any accelerator is left alone."""
  if "JAX_PLATFORMS" in os.environ or "jax" in sys.modules:
    return
  if importlib.util.find_spec("libtpu") is None:
    return
  if any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_FILES):
    return
  os.environ["JAX_PLATFORMS"] = "cpu"


host_malloc.reexec_if_command()
_set_default_xla_flags()
_keep_jax_off_a_missing_tpu()
