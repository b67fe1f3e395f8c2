#!/usr/bin/env bash
# The SeaweedFS -> Kafka notifier (S3 event JSON on the xray-images topic). Needs both services up.
# Usage: notifier.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=notifier

start() {
  need_venv
  if [[ -n "$(pid_of $NAME)" ]]; then log "already running (pid $(pid_of $NAME))"; return 0; fi
  "$ROOT/.venv/bin/xraylab" notifier run >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 60 grep -q "notifier following" "$RUN/$NAME.log" || die "notifier did not start"
  log "running (pid $(pid_of $NAME))"
}

status() {
  local pid; pid="$(pid_of $NAME)"
  [[ -n "$pid" ]] || { log "not running"; return 1; }
  log "running (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid $NAME ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
