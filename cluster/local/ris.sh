#!/usr/bin/env bash
# The demo RIS: an HL7 v2 MLLP listener (delivery/demo_ris.py) on 127.0.0.1:XRAYLAB_DEMO_RIS_PORT that acknowledges
# each ORU^R01 and writes one JSON line per message (ids, band and score; never a patient's name) to
# $STATE/ris/messages.jsonl (mode 600). A stand-in for a hospital's RIS, as the standin doctor is for a radiologist.
# It also writes the local stack's delivery settings, $STATE/ris/delivery.toml: every hospital's results (and
# those of studies with none) go to this listener, and those of PACS studies back into the local Orthanc
# (XRAYLAB_ORTHANC_AET, DICOM port XRAYLAB_ORTHANC_DICOM_PORT, which registers XRAYLAB_DELIVERY_AET as a modality);
# XRAYLAB_DELIVERY_CONFIG names that file unless it names another already.
# Usage: ris.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=ris
DIR="$STATE/ris"

ris_probe() {
  "$PY" -c 'import sys; from delivery.demo_ris import probe
sys.exit(0 if probe("127.0.0.1", int(sys.argv[1]), 2.0) else 1)' "$XRAYLAB_DEMO_RIS_PORT"
}

write_delivery_config() {
  (
    umask 077
    cat >"$DIR/delivery.toml.tmp" <<TOML
# Written by cluster/local/ris.sh at each start: the local stack's destinations (see xraylab/delivery_config.py).
[pacs.local]
ae_title = "$XRAYLAB_ORTHANC_AET"
host = "127.0.0.1"
port = $XRAYLAB_ORTHANC_DICOM_PORT

[ris.demo]
host = "127.0.0.1"
port = $XRAYLAB_DEMO_RIS_PORT
receiving_application = "DEMO_RIS"
receiving_facility = "XRAYLAB_LOCAL"

[default]
pacs = "local"
ris = "demo"
TOML
  )
  mv "$DIR/delivery.toml.tmp" "$DIR/delivery.toml"
}

start() {
  need_venv
  mkdir -p "$DIR"; chmod 700 "$DIR"
  write_delivery_config
  [[ -n "$(env_get XRAYLAB_DELIVERY_CONFIG)" ]] || env_set XRAYLAB_DELIVERY_CONFIG "$DIR/delivery.toml"
  already_running $NAME ris_probe && return 0
  port_free "$XRAYLAB_DEMO_RIS_PORT"
  "$PY" -m delivery.demo_ris --host 127.0.0.1 --port "$XRAYLAB_DEMO_RIS_PORT" --log "$DIR/messages.jsonl" \
    >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 30 ris_probe || die "the demo RIS did not answer an MLLP exchange"
  log "ready on mllp://127.0.0.1:$XRAYLAB_DEMO_RIS_PORT (pid $(pid_of $NAME)); messages in $DIR/messages.jsonl"
}

status() {
  service_status $NAME "no MLLP answer" "answers MLLP on 127.0.0.1:$XRAYLAB_DEMO_RIS_PORT" ris_probe
}

service_main "$@"
