#!/usr/bin/env bash
# The main job on the embedded default: install, then search per-layer decompositions of a
# pretrained CIFAR ResNet-20 (SQLite study in studies/, bundled configs/quickstart.yaml),
# print the Pareto front and write its plot.
# Usage: bash scripts/quickstart.sh [extra `automtd search` arguments, e.g. --n-trials 4]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dashboard,onnx   # the dashboard and ONNX commands of the tour work too
# Local copies beside the repo (as on the project's machines) are used when present;
# otherwise automtd downloads CIFAR-10 and the ResNet-20 weights (checksum verified).
if [ -z "${AUTOMTD_DATA:-}" ] && [ -d ../shared/datasets/cifar-10-batches-py ]; then
  export AUTOMTD_DATA="$(cd ../shared/datasets && pwd)"
fi
if [ -z "${AUTOMTD_WEIGHTS:-}" ] && [ -d ../shared/weights ]; then
  export AUTOMTD_WEIGHTS="$(cd ../shared/weights && pwd)"
fi
exec .venv/bin/automtd search configs/quickstart.yaml "$@"
