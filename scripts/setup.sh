#!/usr/bin/env bash
# Create .venv and install the project with its test extra. Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, the CPU build: a bare 'torch' requirement would pull a multi-GB CUDA build. On a GPU machine,
# install your CUDA build of torch beforehand (this line then does nothing) or set TORCH_SPEC.
python -c "import torch" 2>/dev/null || pip install -q "${TORCH_SPEC:-torch==2.13.0}"
pip install -q -e ".[test]"
python -c "import torch, transformers, peft, trl; print(f'ready: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}')"
