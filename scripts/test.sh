#!/usr/bin/env bash
# Set up and run the whole test suite (CI runs exactly this). Skip the slow ones locally: bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
FT_SETUP_CHECK=0 bash scripts/setup.sh  # the tests / the training import it all next
bash scripts/install_browser.sh
. .venv/bin/activate
unset PYTHONDONTWRITEBYTECODE  # write bytecode as modules are first imported (scripts/setup.sh says why)
python -m pytest -q "$@"
