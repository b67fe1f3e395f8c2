#!/usr/bin/env bash
# The demo: local stack up, a bootstrap model if none, 24 generated X-rays through the pipeline,
# a summary, then the review app until Ctrl-C (the stack is stopped on the way out).
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'bash cluster/local/down.sh || true' EXIT
bash cluster/local/up.sh
set -a; source "${XRAYLAB_ENV_FILE:-${XRAYLAB_STATE_DIR:-.xraylab}/local.env}"; set +a
.venv/bin/xraylab demo "$@"
