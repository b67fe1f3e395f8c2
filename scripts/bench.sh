#!/usr/bin/env bash
# The benchmarks on a stack of their own (.xraylab-bench): benchmarks/serving.py (make bench), or with
# --worklist first, benchmarks/worklist.py (make bench-worklist), or with --monitor first,
# benchmarks/monitor_run.py (make bench-monitor), or with --delivery first, benchmarks/deliveries.py
# (make bench-delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
# No Grad-CAM maps computed ahead by the ingress (ui/heatmap_precompute.py): each pipeline would spend CPU on them
# beside what is measured; the review app's own tests turn it on for their pipeline.
export XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S="${XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S:-0}"
own_stack bench
if [[ "${1:-}" == "--worklist" ]]; then
  shift
  .venv/bin/python benchmarks/worklist.py "$@"
elif [[ "${1:-}" == "--delivery" ]]; then
  shift
  .venv/bin/python benchmarks/deliveries.py "$@"
elif [[ "${1:-}" == "--monitor" ]]; then
  shift
  .venv/bin/python benchmarks/monitor_run.py "$@"
else
  .venv/bin/python benchmarks/serving.py "$@"
fi
