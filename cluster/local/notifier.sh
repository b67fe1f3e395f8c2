#!/usr/bin/env bash
# The SeaweedFS -> Kafka notifier (S3 event JSON on the xray-images topic). Needs both services up.
# Usage: notifier.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=notifier

start() {
  need_venv
  already_running $NAME && return 0
  "$ROOT/.venv/bin/xraylab" notifier run >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 60 grep -q "notifier following" "$RUN/$NAME.log" || die "notifier did not start"
  log "running (pid $(pid_of $NAME))"
}

status() { service_status $NAME; }

service_main "$@"
