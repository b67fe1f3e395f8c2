#!/usr/bin/env bash
# The chaos suite at full size (make chaos): 1,000 uploads per fault, on a stack of its own (.xraylab-chaos).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
own_stack chaos
export XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S="${XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S:-0}"  # as scripts/test.sh
export XRAYLAB_CHAOS_UPLOADS="${XRAYLAB_CHAOS_UPLOADS:-1000}"
.venv/bin/pytest tests/chaos -p no:cacheprovider "$@"
