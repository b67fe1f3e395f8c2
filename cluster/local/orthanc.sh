#!/usr/bin/env bash
# The project's own Orthanc PACS (Debian's `orthanc`, 1.10): own configuration, DICOM storage and SQLite index
# under the state folder; never starts, stops or reads the system instance (/etc/orthanc, /var/lib/orthanc).
# - REST API on XRAYLAB_ORTHANC_HTTP_PORT: HTTP basic auth (user XRAYLAB_ORTHANC_USER, password generated once
#   into the env file as XRAYLAB_ORTHANC_PASSWORD) and "RemoteAccessAllowed": false, so that only loopback
#   clients are served. WebDAV, Lua and plugins are off; the config file (it holds the password) is mode 600.
# - DICOM SCP on XRAYLAB_ORTHANC_DICOM_PORT, AET XRAYLAB_ORTHANC_AET: associations only from the registered
#   modalities, each checked by calling AET *and* host ("DicomCheckModalityHost"); other AETs are rejected.
#   The simulated modality "xraylab-modality" (calling AET XRAYLAB_MODALITY_AET from 127.0.0.1) is always
#   registered, allowed C-ECHO and C-STORE only, and so is xraylab's deliverer (calling AET XRAYLAB_DELIVERY_AET
#   from 127.0.0.1), which stores results back. A hospital adds its own with XRAYLAB_ORTHANC_EXTRA_MODALITIES,
#   a JSON object in Orthanc's "DicomModalities" syntax merged into it: '{"ct1": ["CT_ROOM1", "10.1.2.3", 104]}'
#   (every DICOM command allowed) or '{"cr2": {"AET": "CR2", "Host": "10.1.2.4", "Port": 104, "AllowFind": false,
#   "AllowGet": false, "AllowMove": false}}' (only what is not turned off).
# Orthanc 1.10 cannot bind its listening sockets to one address (there is no bind-address option; both
#   ports listen on all interfaces), so the HTTP side relies on RemoteAccessAllowed + authentication and the
#   DICOM side on the modality allow-list above.
# Usage: orthanc.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=orthanc
DIR="$STATE/orthanc"

# write_config PASSWORD: $DIR/orthanc.json (mode 600), written anew at every start; edits are lost.
write_config() {
  mkdir -p "$DIR/storage" "$DIR/index"
  (
    umask 077
    ORTHANC_DIR="$DIR" ORTHANC_PASSWORD="$1" "$PY" - "$DIR/orthanc.json.tmp" <<'PYEOF'
import json, os, sys
env = os.environ
modalities = {"xraylab-modality": {
    "AET": env["XRAYLAB_MODALITY_AET"], "Host": "127.0.0.1", "Port": 104,  # it only pushes (Orthanc 1.10 rejects port 0)
    "AllowEcho": True, "AllowStore": True, "AllowFind": False, "AllowFindWorklist": False, "AllowGet": False,
    "AllowMove": False, "AllowStorageCommitment": False},
    # xraylab's deliverer stores each PACS study's SR and Grad-CAM picture back (delivery/, docs/delivery.md).
    "xraylab-results": {
    "AET": env["XRAYLAB_DELIVERY_AET"], "Host": "127.0.0.1", "Port": 104,
    "AllowEcho": True, "AllowStore": True, "AllowFind": False, "AllowFindWorklist": False, "AllowGet": False,
    "AllowMove": False, "AllowStorageCommitment": False}}
try:
    extra = json.loads(env.get("XRAYLAB_ORTHANC_EXTRA_MODALITIES") or "{}")
except json.JSONDecodeError as exc:
    sys.exit(f"XRAYLAB_ORTHANC_EXTRA_MODALITIES is not valid JSON: {exc}")
if not isinstance(extra, dict) or not all(isinstance(v, (list, dict)) for v in extra.values()):
    sys.exit('XRAYLAB_ORTHANC_EXTRA_MODALITIES must be a JSON object {"name": [AET, host, port] or {...}}')
modalities.update(extra)
state = env["ORTHANC_DIR"]
config = {
    "Name": "xraylab",
    "StorageDirectory": f"{state}/storage",
    "IndexDirectory": f"{state}/index",
    "StorageCompression": False,
    "Plugins": [],  # never Debian's /usr/share/orthanc/plugins
    "LuaScripts": [],
    "ExecuteLuaEnabled": False,
    "RestApiWriteToFileSystemEnabled": False,
    "HttpServerEnabled": True,
    "HttpPort": int(env["XRAYLAB_ORTHANC_HTTP_PORT"]),
    "RemoteAccessAllowed": False,
    "AuthenticationEnabled": True,
    "RegisteredUsers": {env["XRAYLAB_ORTHANC_USER"]: env["ORTHANC_PASSWORD"]},
    "WebDavEnabled": False,
    "DicomServerEnabled": True,
    "DicomAet": env["XRAYLAB_ORTHANC_AET"],
    "DicomPort": int(env["XRAYLAB_ORTHANC_DICOM_PORT"]),
    "DicomCheckCalledAet": False,
    "DicomAlwaysAllowEcho": False,
    "DicomAlwaysAllowStore": False,
    "DicomAlwaysAllowFind": False,
    "DicomAlwaysAllowFindWorklist": False,
    "DicomAlwaysAllowGet": False,
    "DicomAlwaysAllowMove": False,
    "DicomCheckModalityHost": True,
    "DicomModalities": modalities,
    "DicomModalitiesInDatabase": False,
    "OrthancPeers": {},
    "HttpsCACertificates": "/etc/ssl/certs/ca-certificates.crt",  # Debian's; the default would be the config folder
    "StableAge": 2,
    "DeidentifyLogs": True,
}
with open(sys.argv[1], "w") as f:
    json.dump(config, f, indent=2)
PYEOF
  ) || die "could not write $DIR/orthanc.json"
  chmod 600 "$DIR/orthanc.json.tmp"
  mv "$DIR/orthanc.json.tmp" "$DIR/orthanc.json"
}

start() {
  need_venv
  local url="http://127.0.0.1:$XRAYLAB_ORTHANC_HTTP_PORT"
  already_running $NAME probe orthanc "$url" && return 0
  install_if_missing Orthanc orthanc
  local password; password="$(env_get XRAYLAB_ORTHANC_PASSWORD)"
  if [[ -z "$password" ]]; then password="$(random_secret)"; env_set XRAYLAB_ORTHANC_PASSWORD "$password"; fi
  mkdir -p "$DIR"; chmod 700 "$DIR"
  write_config "$password"
  port_free "$XRAYLAB_ORTHANC_HTTP_PORT"; port_free "$XRAYLAB_ORTHANC_DICOM_PORT"
  log "starting Orthanc on $url (DICOM AET $XRAYLAB_ORTHANC_AET on port $XRAYLAB_ORTHANC_DICOM_PORT)"
  "$(find_bin Orthanc)" "$DIR/orthanc.json" >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 60 probe orthanc "$url" || die "Orthanc did not answer $url/system"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  local url="http://127.0.0.1:$XRAYLAB_ORTHANC_HTTP_PORT"
  service_status $NAME "$url/system fails" "$url/system answers" probe orthanc "$url"
}

service_main "$@"
