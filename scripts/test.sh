#!/usr/bin/env bash
# The test command: start the local stack (if not already up), run pytest, stop what this run started.
set -euo pipefail
cd "$(dirname "$0")/.."
started=0
if ! bash cluster/local/status.sh >/dev/null 2>&1; then
  started=1
  trap 'bash cluster/local/down.sh || true' EXIT
  bash cluster/local/up.sh
fi
set -a; source "${XRAYLAB_ENV_FILE:-${XRAYLAB_STATE_DIR:-.xraylab}/local.env}"; set +a
.venv/bin/ruff check .
.venv/bin/pytest "$@"
