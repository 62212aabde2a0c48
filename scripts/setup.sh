#!/usr/bin/env bash
# Create .venv and install the project with its test extra. Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
# Installs go through uv, which takes the same versions as pip from the same places in less time (a new venv
# here: 53 s against 81 s), and through pip where uv cannot. Bytecode: uv installs none (pip compiles every file,
# torch's and transformers' thousands that no command imports: 45 s of a new venv here). Python writes it at a
# module's first import instead, unless PYTHONDONTWRITEBYTECODE is set (these machines set it): then every process
# would import torch and transformers from source (20 s instead of 8.5 s). So the import check below writes it
# for what every command loads, and scripts/test.sh and quickstart.sh write it as it is first used: they skip the
# check (FT_SETUP_CHECK=0), since the command they run next imports the same modules and stops just as early on a
# broken install, and the check's own import would be paid twice.
pip install -q "uv>=0.5" 2>/dev/null || true
install() {
    if command -v uv >/dev/null; then
        uv pip install -q ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} "$@" && return
    fi
    pip install -q "$@"
}
# torch first, the CPU build: a bare 'torch' requirement would pull a multi-GB CUDA build. On a GPU machine,
# install your CUDA build of torch beforehand (this line then does nothing) or set TORCH_SPEC.
python -c "import torch" 2>/dev/null || install "${TORCH_SPEC:-torch==2.13.0}"
install -e ".[test]"
if [ "${FT_SETUP_CHECK:-1}" = 0 ]; then  # the versions installed, without importing them
    python -c "from importlib.metadata import version
print('installed: ' + ', '.join(f'{p} {version(p)}' for p in ('torch', 'transformers', 'peft', 'trl')))"
else
    env -u PYTHONDONTWRITEBYTECODE python -c "import torch, transformers, peft, trl
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer
from trl import SFTTrainer
print(f'ready: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}')"
fi
