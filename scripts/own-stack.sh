# Source it: `own_stack NAME` gives this run a stack of its own and starts it if it is not up (stopping it
# again on exit): state in .xraylab-NAME (its own Kafka, SeaweedFS and MariaDB data, SQLite file and models),
# topic, consumer group and bucket names ending in -NAME. The generated settings stay in their env file
# (XRAYLAB_ENV_FILE, which every xraylab process reads): never exported, so no secret sits in the
# environment of the processes started from here (Ray's workers among them).
own_stack() {
  local name="$1" upper; upper="$(echo "$name" | tr '[:lower:]' '[:upper:]')"
  local override="XRAYLAB_${upper}_STATE_DIR"
  export XRAYLAB_STATE_DIR="${!override:-$PWD/.xraylab-$name}"
  export XRAYLAB_ENV_FILE="$XRAYLAB_STATE_DIR/local.env"
  export XRAYLAB_KAFKA_TOPIC="xray-images-$name" XRAYLAB_KAFKA_DLQ_TOPIC="xray-images-$name.dlq"
  export XRAYLAB_KAFKA_GROUP="xraylab-ingest-$name" XRAYLAB_S3_BUCKET="xray-images-$name"
  export XRAYLAB_ALERT_TOPIC="xray-alerts-$name"
  if ! bash cluster/local/status.sh >/dev/null 2>&1; then
    trap 'bash cluster/local/down.sh || true' EXIT
    bash cluster/local/up.sh
  fi
}
