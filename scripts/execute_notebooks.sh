#!/usr/bin/env bash
# Re-executes the tutorial notebooks at full size, in place, keeping their outputs: the
# version to commit (the docs render them as committed; tests/test_notebooks_committed.py
# checks them). 01 runs first: it trains the shared pretraining run the others reuse
# (cached in ~/.cache/valpat_keras/notebooks, or $VALPAT_CACHE). Pass notebook paths to run
# only those (the check at the end then covers only them). Long on a CPU-only machine;
# KERAS_BACKEND picks the backend (default jax).
set -euo pipefail
cd "$(dirname "$0")/.."
unset VALPAT_QUICK
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
if [[ $# -gt 0 ]]; then
  notebooks=("$@")
else
  notebooks=(notebooks/*.ipynb)  # sorted by the shell: 01_pretraining first
fi
for notebook in "${notebooks[@]}"; do
  echo "== $(date +%H:%M:%S) executing $notebook (full size, backend $KERAS_BACKEND)"
  SECONDS=0
  jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout=14400 "$notebook"
  echo "   done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
done
echo "== checking the executed notebooks"
filter=""
for notebook in "${notebooks[@]}"; do filter+="${filter:+ or }$(basename "$notebook" .ipynb)"; done
python -m pytest -q -p no:cacheprovider tests/test_notebooks_committed.py -k "$filter"
