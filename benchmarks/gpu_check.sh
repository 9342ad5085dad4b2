#!/usr/bin/env bash
# One command for a GPU check: the Pythia-70M- and Gemma-2-2B-shaped workloads at true widths against the paper's
# algorithm on one CUDA device, with absolute times, peak GPU memory and the floor, into $OUT/bench.json
# (default ./gpu-check). Replica weights are built locally: no model hub. Meant to finish in under 8 minutes
# on one H100-class GPU.
#
#   benchmarks/gpu_check.sh                      # cuda, full size
#   benchmarks/gpu_check.sh --device cpu --quick # the same path at small widths (CI runs this)
#
# Uses $PYTHON (default python3) with its own torch. When sfc_plugin, SAELens or TransformerLens do not import:
# with $SFC_WHEELS (a folder benchmarks/gpu_wheels.sh filled, for a machine without a package index) installs those
# wheels with --no-deps into $SFC_SITE (default /tmp/sfc-site) and runs this checkout from PYTHONPATH; else
# installs this repository with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
if ! "$PY" -c "import sfc_plugin, sae_lens, transformer_lens" 2>/dev/null; then
  if [ -n "${SFC_WHEELS:-}" ]; then
    SITE=${SFC_SITE:-/tmp/sfc-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$SFC_WHEELS"/*.whl
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    "$PY" -m pip install -q -e .
  fi
  "$PY" -c "import sfc_plugin, sae_lens, transformer_lens"
fi
device=cuda
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
"$PY" -c "import torch, sys; d = sys.argv[1]; sys.exit(0 if d == 'cpu' or torch.cuda.is_available() else \
'gpu_check: no CUDA device (torch ' + torch.__version__ + '); use --device cpu --quick for the smoke test')" "$device"
"$PY" -m sfc_plugin.cli bench --suite gpu --device "$device" -q -o "$OUT" "${args[@]}"
