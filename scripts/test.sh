#!/usr/bin/env bash
# The test command of the README: the whole suite on JAX, then every test that touches
# Keras (marker `keras`) on TensorFlow and PyTorch, then the notebooks at smoke size.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
echo "== KERAS_BACKEND=jax: whole suite"
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "$@"
echo "== KERAS_BACKEND=tensorflow: tests marked keras"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider -m keras "$@"
echo "== KERAS_BACKEND=torch: tests marked keras"
KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider -m keras "$@"
