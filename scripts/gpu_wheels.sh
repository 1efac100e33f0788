#!/usr/bin/env bash
# `make gpu-wheels`: on a machine with a package registry, downloads into .whl/ the wheels listed
# in scripts/gpu_wheels.txt for the GPU machines (CPython 3.12, manylinux x86-64). Carry .whl/
# with the tree; `make gpu-check` installs them there offline. antlr4 ships as a source archive
# only: it is built here into a pure-Python wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PYVER=${GPU_PYTHON_VERSION:-3.12}
mkdir -p .whl
mapfile -t PINS < <(grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$')
BINARY=(); SOURCE=()
for pin in "${PINS[@]}"; do
  case "$pin" in antlr4-python3-runtime==*) SOURCE+=("$pin");; *) BINARY+=("$pin");; esac
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${BINARY[@]}"
if [ ${#SOURCE[@]} -gt 0 ]; then "$PY" -m pip wheel -q --no-deps -w .whl "${SOURCE[@]}"; fi
du -sh .whl
