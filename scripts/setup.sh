#!/usr/bin/env bash
# Create .venv with a CPU torch and sfc-plugin (editable) plus test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A CPU build of torch: pinned here only (pyproject keeps a range so users keep their own torch/CUDA).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
