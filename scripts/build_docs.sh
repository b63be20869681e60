#!/usr/bin/env bash
# Builds the documentation site strictly. The notebooks are copied into the docs folder;
# pass --execute to render executed copies (smoke size) instead of the stripped ones.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf tutorials/notebooks && mkdir -p tutorials/notebooks
if [[ "${1:-}" == "--execute" ]]; then
  VALPAT_QUICK=1 jupyter nbconvert --to notebook --execute --output-dir tutorials/notebooks notebooks/*.ipynb
else
  cp notebooks/*.ipynb tutorials/notebooks/
fi
mkdocs build --strict --site-dir site
