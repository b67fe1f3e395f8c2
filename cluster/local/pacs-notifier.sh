#!/usr/bin/env bash
# The PACS -> Kafka notifier (Orthanc's /changes as S3-shaped events on the xray-images topic). Needs Orthanc and
# Kafka up. Its position in the PACS's change log is kept in $STATE/pacs-notifier.seq.
# Usage: pacs-notifier.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=pacs-notifier

start() {
  need_venv
  already_running $NAME && return 0
  "$ROOT/.venv/bin/xraylab" notifier run --source pacs >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 60 grep -q "pacs notifier following" "$RUN/$NAME.log" || die "pacs notifier did not start"
  log "running (pid $(pid_of $NAME))"
}

status() { service_status $NAME; }

service_main "$@"
