#!/usr/bin/env bash
# The README's main-job command: sets up .venv (once) and runs the demo.
#   bash scripts/demo.sh                 # the whole demo (about 1800 digits, 600 steps)
#   bash scripts/demo.sh --quick         # a smaller run (what the test suite runs)
#   bash scripts/demo.sh --print_commands
# Every other option goes to scripts/demo.py (--work_dir, --train_steps, --max_per_class, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs the package, scikit-learn, matplotlib and tensorflow-serving-api (the "demo" extra);
# POLYNET_EXTRAS=test installs the test suite's extras instead.
bash scripts/setup_env.sh "${POLYNET_EXTRAS:-demo}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# --fresh: a second run replaces the output of the first (only a folder the demo
# made, marked by its .polynet_demo file; any other folder is refused).
exec .venv/bin/python scripts/demo.py --fresh "$@"
