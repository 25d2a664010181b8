#!/usr/bin/env bash
# Sets up a fresh machine for ssl_jax: the offline Fashion-MNIST files (Debian package),
# the Python package with its pinned dependencies, and the prepared TFDS datasets.
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

PYTHON=${PYTHON:-python3}
echo "== installing ssl_jax and its dependencies ($($PYTHON --version))"
$PYTHON -m pip install --quiet --disable-pip-version-check -e ".[test]"

echo "== preparing the Fashion-MNIST TFDS dataset (ArrayRecord)"
$PYTHON -m ssl_jax.data.prepare fashion_mnist
echo "== preparing photo_crops, the offline colour dataset (ArrayRecord)"
$PYTHON -m ssl_jax.data.prepare photo_crops
