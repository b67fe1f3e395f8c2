#!/usr/bin/env bash
# The test command: ruff and pytest on a stack of the tests' own (.xraylab-test, own topics, group and bucket),
# so a test run never sees a demo's events and the demo starts clean.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
own_stack test
.venv/bin/ruff check .
.venv/bin/pytest "$@"
