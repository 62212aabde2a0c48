#!/usr/bin/env bash
# The main job: set up, fine-tune the EN->KO translator (cpu profile on a machine without a GPU), then score
# base vs fine-tuned on the shipped test split. Extra arguments go to the training command.
set -euo pipefail
cd "$(dirname "$0")/.."
FT_SETUP_CHECK=0 bash scripts/setup.sh  # the training imports it all next
. .venv/bin/activate
unset PYTHONDONTWRITEBYTECODE  # write bytecode as modules are first imported (scripts/setup.sh says why)
python -m apps.translator.train "$@"
python -m apps.translator.evaluate --run latest
