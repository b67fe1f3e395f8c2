#!/usr/bin/env bash
# The test command: start the test stack (if not already up), run ruff and pytest, stop what this run started.
# Tests have a state folder, topics, consumer group and bucket of their own (.xraylab-test/: its own Kafka,
# SeaweedFS and MariaDB data), so a test run never sees a demo's events and the demo starts clean.
set -euo pipefail
cd "$(dirname "$0")/.."
export XRAYLAB_STATE_DIR="${XRAYLAB_TEST_STATE_DIR:-$PWD/.xraylab-test}"
export XRAYLAB_ENV_FILE="$XRAYLAB_STATE_DIR/local.env"
export XRAYLAB_KAFKA_TOPIC=xray-images-test XRAYLAB_KAFKA_DLQ_TOPIC=xray-images-test.dlq
export XRAYLAB_KAFKA_GROUP=xraylab-ingest-test XRAYLAB_S3_BUCKET=xray-images-test
if ! bash cluster/local/status.sh >/dev/null 2>&1; then
  trap 'bash cluster/local/down.sh || true' EXIT
  bash cluster/local/up.sh
fi
set -a; source "$XRAYLAB_ENV_FILE"; set +a
.venv/bin/ruff check .
.venv/bin/pytest "$@"
