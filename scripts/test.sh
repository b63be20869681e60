#!/usr/bin/env bash
# The test command of the README: the whole suite and the notebooks (smoke size) on JAX, then
# every test that touches Keras (marker `keras`) on TensorFlow and PyTorch. The backend-agnostic
# end-to-end trainings (marker `trains_once`) run once, in the PyTorch pass: their tiny
# trainings run eagerly there, without the per-model XLA compilation that dominates them on JAX.
#
# Tests run in VALPAT_TEST_WORKERS processes (pytest-xdist; default 2, 0 = in this process),
# a whole file per worker so that module fixtures (the demo run) are built once. The workers
# share one JAX compilation cache, so identical tiny models compile once per pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
workers=${VALPAT_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadfile); fi
VALPAT_JAX_CACHE_DIR=${VALPAT_JAX_CACHE_DIR:-$(mktemp -d -t valpat_jax_cache_XXXX)}
export VALPAT_JAX_CACHE_DIR
echo "== KERAS_BACKEND=jax: whole suite but the trains_once tests"
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "${parallel[@]}" \
  -m "not trains_once" "$@"
echo "== KERAS_BACKEND=jax: notebooks at smoke size (VALPAT_QUICK=1)"
VALPAT_QUICK=1 KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "${parallel[@]}" \
  --nbmake --nbmake-timeout=600 notebooks
echo "== KERAS_BACKEND=tensorflow: tests marked keras"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "${parallel[@]}" -m keras "$@"
echo "== KERAS_BACKEND=torch: tests marked keras or trains_once"
KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider "${parallel[@]}" \
  -m "keras or trains_once" "$@"
