#!/usr/bin/env bash
# `make gpu-check`: installs the carried wheels (.whl/, from `make gpu-wheels`) offline into a
# scratch folder, then runs scripts/gpu_check.py with the machine's Python (the one holding its
# CUDA torch). Nothing is fetched from the network. Arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${GPU_PYTHON:-}" ]; then PY=$GPU_PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
# no CUDA: one error line before anything is installed
"$PY" scripts/gpu_check.py --cuda-only
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/reid-gpu-site .whl/*.whl
  export PYTHONPATH=/tmp/reid-gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" scripts/gpu_check.py "$@"
