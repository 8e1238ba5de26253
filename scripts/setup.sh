#!/usr/bin/env bash
# Create ./.venv and install automtd with its extras. Idempotent; safe to rerun.
# Usage: bash scripts/setup.sh [EXTRAS]     (EXTRAS e.g. "test" or "postgres,dashboard")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch/torchvision pinned: on the project's machines they come from the local package mirror.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
if [ -n "$extras" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
else
  .venv/bin/pip install -q --disable-pip-version-check -e .
fi
