#!/usr/bin/env bash
# The README's test command: sets up .venv (once) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# Lint first (ruff.toml): seconds, and a failure names file and line.
.venv/bin/ruff check .
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Two processes: the machine has two cores; files stay whole per process so
# module-scoped fixtures (reference networks, datasets) are built once. Files
# go out in collection order, slow ones first (tests/conftest.py), not
# xdist's default of most tests first, which left the few-test, minutes-long
# multi-process files for last.
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
