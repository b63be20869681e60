#!/usr/bin/env bash
# The test command of the README: the whole suite and the notebooks (smoke size) on JAX, then
# every test that touches Keras (marker `keras`) on TensorFlow and PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
echo "== KERAS_BACKEND=jax: whole suite"
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "$@"
echo "== KERAS_BACKEND=jax: notebooks at smoke size (VALPAT_QUICK=1)"
VALPAT_QUICK=1 KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider --nbmake \
  --nbmake-timeout=600 notebooks
echo "== KERAS_BACKEND=tensorflow: tests marked keras"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider -m keras "$@"
echo "== KERAS_BACKEND=torch: tests marked keras"
KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider -m keras "$@"
