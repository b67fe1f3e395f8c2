#!/usr/bin/env bash
# The benchmarks on a stack of their own (.xraylab-bench): benchmarks/serving.py (make bench), or with
# --worklist first, benchmarks/worklist.py (make bench-worklist), or with --monitor first,
# benchmarks/monitor_run.py (make bench-monitor), or with --delivery first, benchmarks/deliveries.py
# (make bench-delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
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
