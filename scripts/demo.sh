#!/usr/bin/env bash
# The README's main-job command: sets up .venv (once) and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec .venv/bin/python scripts/demo.py "$@"
