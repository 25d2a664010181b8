"""ssl_jax: self-supervised pretraining in JAX/Flax.

Importing the package before jax sets XLA:CPU flags that make convolution training
faster on CPU (why: ssl_jax/models/conv.py); they do nothing on GPU/TPU.
XLA reads XLA_FLAGS once, when jax starts, so this only works if ssl_jax is imported
first (every entrypoint here does). Set SSL_JAX_DEFAULT_XLA_FLAGS=0 to opt out.
"""
import os
import sys

# Keep XLA:CPU's convolutions on Eigen rather than YNNPACK (dots and reductions stay on
# YNNPACK): ~1.4x faster fwd+bwd for the demo ResNet on 2 cores. The same string as
# ssl_jax.models.conv.CPU_XLA_FLAGS, repeated because this module must not import jax.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def _set_default_xla_flags() -> None:
  if os.environ.get("SSL_JAX_DEFAULT_XLA_FLAGS") == "0" or "jax" in sys.modules:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_XLA_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags


_set_default_xla_flags()
