#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a GPU machine without a package index: downloads what
# benchmarks/gpu_wheels.txt lists, for CPython 3.12 ($SFC_WHEELS_PYTHON) on x86-64 Linux, into DIR (default .whl), and
# prints its size.
#
#   benchmarks/gpu_wheels.sh [DIR]                       # here, where pip reaches a package index
#   SFC_WHEELS=DIR benchmarks/gpu_check.sh               # there: installs them with --no-deps, runs the check
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
platforms=()
for n in 2_17 2_27 2_28 2_31 2_34 2_35 2_39; do platforms+=(--platform "manylinux_${n}_x86_64"); done
grep -v '^#' benchmarks/gpu_wheels.txt | grep . | while read -r req; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${SFC_WHEELS_PYTHON:-3.12}" --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DIR" "$req"
done
echo "$(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
