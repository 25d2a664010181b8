"""ssl_jax: self-supervised pretraining in JAX/Flax."""
from setuptools import find_packages, setup

# Ranges are the versions the test suite ran green on; widen them only after a run.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9.10,<4.10",
    "array-record>=0.8.6,<0.9",
    "importlib_resources>=6",          # tfds needs it when a builder lives in a module
    "etils[epath,epy]>=1.15",
    "einops>=0.8.2,<0.9",
    "ml-collections>=1.1.0,<1.2",
    "dm-pix>=0.4.5,<0.5",
    "absl-py>=2.1",
    "numpy>=2.0,<3",
    "tensorboardX>=2.6.5,<2.7",
    "matplotlib>=3.9,<3.12",         # ssl_jax.tools.plot and the results table's figures
    "pillow>=10",
    "safetensors>=0.8,<0.9",          # ssl_jax.export
    "tokenizers>=0.23,<0.24",         # ssl_jax.data.text: WordPiece, trained offline
    "gcsfs>=2026.10.1,<2027",         # gs:// workdirs (core/paths.py; orbax's epath uses it too)
]

# libtpu, the TPU runtime and compiler matched to the pinned jax: needed on TPU VMs, and on
# any host to compile for a TPU slice ahead of time (python -m ssl_jax.tools.aot). On a host
# without accelerators ssl_jax then keeps jax on the CPU (ssl_jax/__init__.py).
TPU_REQUIRES = ["jax[tpu]>=0.10.2,<0.11"]

setup(
    name="ssl_jax",
    version="0.1.0",
    description="Self-supervised pretraining at high throughput in JAX/Flax",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ssl_jax", "ssl_jax.*", "experiments"]),
    # Built on the host at first use (ssl_jax/models/onednn.py), so shipped as source.
    package_data={"ssl_jax.models": ["onednn_conv.cc"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # gcp-storage-emulator: a GCS JSON API on 127.0.0.1 for the gs:// workdir tests.
        "test": ["pytest>=8", "pytest-xdist>=3.8,<4", "scikit-learn>=1.5",
                 "gcp-storage-emulator>=2026.7.19,<2027", "pyarrow>=26,<27", *TPU_REQUIRES],
        "parquet": ["pyarrow>=26,<27"],   # data.prepare --from_table F.parquet
        "tpu": TPU_REQUIRES,
        "tf": ["tensorflow>=2.16"],
    },
)
