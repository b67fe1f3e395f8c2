#!/usr/bin/env bash
# The serving benchmark (make bench) on a stack of its own (.xraylab-bench), then benchmarks/serving.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
own_stack bench
.venv/bin/python benchmarks/serving.py "$@"
