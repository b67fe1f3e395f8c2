#!/usr/bin/env bash
# The test command: ruff and pytest on a stack of the tests' own (.xraylab-test, own topics, group and bucket),
# so a test run never sees a demo's events and the demo starts clean.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
# The tests' buckets (test-*, made by the tests' admin fixture) are sources as well as the stack's own.
export XRAYLAB_S3_SOURCE_BUCKETS="xray-images-test,test-*"
# No Grad-CAM maps computed ahead by the ingress (ui/heatmap_precompute.py): each pipeline would spend CPU on them
# beside what is measured; the review app's own tests turn it on for their pipeline.
export XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S="${XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S:-0}"
own_stack test
.venv/bin/ruff check .
.venv/bin/pytest "$@"
