#!/usr/bin/env bash
# Sets up a fresh machine for ssl_jax: the offline Fashion-MNIST and fortune files, tcmalloc, a C++
# compiler and oneDNN (Debian packages), the Python package with its pinned dependencies, its oneDNN
# convolution library, and the prepared TFDS datasets.
#   bash scripts/setup.sh          # package + test extras + data
set -euo pipefail
cd "$(dirname "$0")/.."

FASHION_DIR=${SSL_JAX_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST IDX files are not in $FASHION_DIR and this is not a root shell with apt-get." >&2
    echo "Run 'sudo apt-get install -y dataset-fashion-mnist', or put the four IDX .gz files in a" >&2
    echo "directory and set SSL_JAX_FASHION_MNIST_DIR to it, then run this script again." >&2
    exit 1
  fi
fi

FORTUNES_DIR=${SSL_JAX_FORTUNES_DIR:-/usr/share/games/fortunes}
if [ ! -f "$FORTUNES_DIR/fortunes" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing the fortune files (apt-get install fortunes fortunes-min)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes fortunes-min >/dev/null
  else
    echo "The fortune files are not in $FORTUNES_DIR and this is not a root shell with apt-get." >&2
    echo "Run 'sudo apt-get install -y fortunes fortunes-min', or set SSL_JAX_FORTUNES_DIR to a" >&2
    echo "directory of fortune files, then run this script again." >&2
    exit 1
  fi
fi

# tcmalloc: the project's commands run under it when the host has it (ssl_jax/core/host_malloc.py,
# up to ~1.5x faster XLA:CPU steps). Optional: without it they run under glibc's malloc.
have_tcmalloc() {  # (ls over both patterns fails when either matches nothing)
  for library in /usr/lib/*-linux-gnu/libtcmalloc*.so.4 /usr/lib64/libtcmalloc*.so.4; do
    [ -e "$library" ] && return 0
  done
  return 1
}
if ! have_tcmalloc; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing tcmalloc (apt-get install libtcmalloc-minimal4)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null
  else
    echo "tcmalloc is not installed: the CPU steps will run under glibc's malloc, up to ~1.5x slower." >&2
    echo "Install it with 'sudo apt-get install -y libtcmalloc-minimal4' (Debian/Ubuntu)." >&2
  fi
fi

# oneDNN's convolutions on CPU (ssl_jax/models/onednn.py, ~1.7x faster ResNet steps): a small
# library built here from ssl_jax/models/onednn_conv.cc. Optional: without it, convolutions on CPU
# run in XLA's own kernels.
ONEDNN=1
if ! command -v g++ >/dev/null || [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing a C++ compiler and oneDNN (apt-get install g++ libdnnl-dev)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ libdnnl-dev >/dev/null
  else
    ONEDNN=0
    echo "g++ or oneDNN's headers are missing: ResNet steps on CPU will use XLA's convolutions," >&2
    echo "~1.7x slower. Install them with 'sudo apt-get install -y g++ libdnnl-dev' (Debian/Ubuntu)." >&2
  fi
fi

PYTHON=${PYTHON:-python3}
echo "== installing ssl_jax and its dependencies ($($PYTHON --version))"
$PYTHON -m pip install --quiet --disable-pip-version-check -e ".[test]"
if [ "$ONEDNN" = 1 ]; then
  echo "== building oneDNN's convolutions for XLA:CPU"
  $PYTHON -m ssl_jax.models.onednn
fi

echo "== preparing the Fashion-MNIST TFDS dataset (ArrayRecord)"
$PYTHON -m ssl_jax.data.prepare fashion_mnist
echo "== preparing photo_crops, the offline colour dataset (ArrayRecord)"
$PYTHON -m ssl_jax.data.prepare photo_crops
echo "== preparing fortunes, the offline English text (ArrayRecord), and its tokenizer"
$PYTHON -m ssl_jax.data.prepare fortunes
$PYTHON -m ssl_jax.data.text fortunes --vocab_size 8192
$PYTHON -m ssl_jax.data.text fortunes --vocab_size 512     # the text smoke runs' tokenizer
echo "== preparing moving_fashion_mnist, the offline video dataset (ArrayRecord)"
$PYTHON -m ssl_jax.data.prepare moving_fashion_mnist
echo "== preparing fashion_mnist_captions (CLIP's offline image-text pairs) and its tokenizer"
$PYTHON -m ssl_jax.data.prepare fashion_mnist_captions
$PYTHON -m ssl_jax.data.text fashion_mnist_captions --feature caption --vocab_size 256
