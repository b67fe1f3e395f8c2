#!/usr/bin/env bash
# The test command: ruff and pytest on a stack of the tests' own (.xraylab-test, own topics, group and bucket),
# so a test run never sees a demo's events and the demo starts clean.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
# The tests' buckets (test-*, made by the tests' admin fixture) are sources as well as the stack's own.
export XRAYLAB_S3_SOURCE_BUCKETS="xray-images-test,test-*"
own_stack test
.venv/bin/ruff check .
.venv/bin/pytest "$@"
