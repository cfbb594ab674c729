#!/usr/bin/env bash
# Creates (once) the virtualenv .venv inside the checkout and installs the package
# with the extras named in $1 (default: test). Safe to run again: it reinstalls
# only when setup.py or this script changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=".venv/.polynet_tf_installed_${extras//,/_}"
want="$(cat setup.py scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
  if [[ ",${extras}," == *",test,"* ]]; then
    # Reference PyTorch PolyNets for tests/weights. torch is pinned (a CPU
    # wheel where one is on the find-links path; set POLYNET_TORCH_INDEX_URL,
    # e.g. https://download.pytorch.org/whl/cpu, to avoid PyPI's CUDA build on
    # a fresh machine). The two model packages go in with --no-deps: their
    # torchvision requirement would pull a multi-GB CUDA build, and the tests
    # import only their model files.
    .venv/bin/python -m pip install --quiet "torch==2.13.0" \
      ${POLYNET_TORCH_INDEX_URL:+--index-url "$POLYNET_TORCH_INDEX_URL"}
    .venv/bin/python -m pip install --quiet --no-deps "pretrainedmodels>=0.7.4" "pytorchcv>=0.0.67"
  fi
  echo "$want" > "$stamp"
fi
