#!/usr/bin/env bash
# Set up emoknn in a virtual environment (.venv by default) from this checkout.
#
# torch is installed first and pinned on its own line: on machines that carry a local CPU build
# (pip's find-links), `torch==2.13.0` takes it; any other request for torch would pull gigabytes of
# CUDA packages. On your own GPU machine, install the torch build you want first and set
# EMOKNN_TORCH="" to keep it.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${EMOKNN_VENV:-.venv}"
TORCH="${EMOKNN_TORCH-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if [ -n "$TORCH" ]; then
  "$VENV/bin/python" -m pip install --quiet "$TORCH"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
echo "emoknn installed in $VENV — activate it with: source $VENV/bin/activate"
