# Helpers shared by the local-stack scripts. Source it; do not run it.
# State (data, logs, PID files, generated secrets) lives under $XRAYLAB_STATE_DIR (default <repo>/.xraylab).
# It is the owner's only: umask 077 makes every file (0600) and folder (0700) these scripts and the services
# they start (Kafka, MariaDB, Prometheus, SeaweedFS, ...) create private, and $STATE and $RUN are 0700.
set -euo pipefail
umask 077

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$LOCAL_DIR/../.." && pwd)"
STATE="${XRAYLAB_STATE_DIR:-$ROOT/.xraylab}"
RUN="$STATE/run"
ENV_FILE="${XRAYLAB_ENV_FILE:-$STATE/local.env}"
PY="${XRAYLAB_PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$RUN"
chmod 700 "$STATE" "$RUN"  # folders made before the umask was set keep their mode otherwise
export XRAYLAB_STATE_DIR="$STATE" XRAYLAB_ENV_FILE="$ENV_FILE"

# Defaults, unless the environment already sets them.
while IFS='=' read -r key value; do
  [[ -z "$key" || "$key" == \#* ]] && continue
  if [[ -z "${!key:-}" ]]; then export "$key=$value"; fi
done < "$LOCAL_DIR/defaults.env"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_of NAME -> the PID recorded for NAME if that process is alive, else nothing.
pid_of() {
  local file="$RUN/$1.pid" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# stop_pid NAME: stop the process we recorded (TERM, then KILL after 20 s). Never touches other processes.
stop_pid() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  if [[ -z "$pid" ]]; then rm -f "$RUN/$name.pid"; log "$name not running"; return 0; fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) did not stop; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$RUN/$name.pid"
  log "$name stopped"
}

# port_free PORT: fail if something (not started by us) already listens on 127.0.0.1:PORT.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 on 127.0.0.1 is already in use by another process; stop it or change the port (see defaults.env)"
  fi
}

# wait_ready NAME SECONDS CMD...: retry CMD about once a second until it succeeds or time runs out.
wait_ready() {
  local name="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [[ -z "$(pid_of "$name")" ]]; then
      log "$name exited; last log lines:"; tail -n 30 "$RUN/$name.log" >&2 || true; return 1
    fi
    if (( SECONDS >= deadline )); then
      log "$name not ready after ${seconds}s; last log lines:"; tail -n 30 "$RUN/$name.log" >&2 || true; return 1
    fi
    sleep 1
  done
}

# env_get KEY -> value from the generated env file, or nothing.
env_get() { [[ -f "$ENV_FILE" ]] && sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 || true; }

# env_set KEY VALUE: write KEY=VALUE into the generated env file (mode 600).
env_set() {
  mkdir -p "$(dirname "$ENV_FILE")"; touch "$ENV_FILE"; chmod 600 "$ENV_FILE"
  local tmp; tmp="$(mktemp)"
  grep -v "^$1=" "$ENV_FILE" > "$tmp" || true
  printf '%s=%s\n' "$1" "$2" >> "$tmp"
  cat "$tmp" > "$ENV_FILE"; rm -f "$tmp"
}

# make_certs NAME DIR CERT CA_CN CERT_CN USAGE WHAT: once, in DIR (mode 700), a private CA (ca.crt; its key is
# not kept: nothing more is signed) and one certificate CERT.crt / CERT.key for 127.0.0.1 and localhost, with
# extendedKeyUsage USAGE; openssl's output goes to $RUN/NAME-certs.log, shown on failure. WHAT names them in errors.
make_certs() {
  local name="$1" dir="$2" cert="$3" ca_cn="$4" cn="$5" usage="$6" what="$7"
  [[ -f "$dir/$cert.crt" && -f "$dir/$cert.key" && -f "$dir/ca.crt" ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed to make $what"
  mkdir -p "$dir"; chmod 700 "$dir"
  (
    set -e
    cd "$dir"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=$ca_cn" \
      -keyout ca.key -out ca.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" -keyout "$cert.key" -out "$cert.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' \
      "$usage" > ext.cnf
    openssl x509 -req -in "$cert.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile ext.cnf \
      -out "$cert.crt"
    rm -f ca.key "$cert.csr" ext.cnf ca.srl
  ) >"$RUN/$name-certs.log" 2>&1 || { cat "$RUN/$name-certs.log" >&2; die "could not make $what"; }
  [[ -s "$dir/$cert.crt" && -s "$dir/$cert.key" ]] || die "$what are missing after openssl"
}

random_secret() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))'; }

probe() { "$PY" "$LOCAL_DIR/probe.py" "$@"; }

# find_bin NAME -> the path of a program from PATH, /usr/sbin or /usr/bin (root's PATH may lack one), or nothing.
find_bin() {
  command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } \
    || { [[ -x "/usr/bin/$1" ]] && echo "/usr/bin/$1"; } || true
}

# install_if_missing PROGRAM PACKAGE: apt-get install Debian's PACKAGE unless PROGRAM is found. RUNLEVEL=1 keeps
# the package's own service from starting: the project runs its own instance.
install_if_missing() {
  local program="$1" package="$2" apt_log="$RUN/$2-apt.log"
  [[ -n "$(find_bin "$program")" ]] && return 0
  log "$program not found: installing Debian's $package"
  [[ "$(id -u)" == 0 ]] || die "install $package (apt-get install $package) or run as root"
  # apt's usual umask: the package's files and what its scripts make outside $STATE stay readable to the system.
  (umask 022; apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package") \
    >"$apt_log" 2>&1 || { tail -n 20 "$apt_log" >&2; die "apt-get install $package failed"; }
}

need_venv() { [[ -x "$PY" ]] || die "no Python environment at $PY: run 'make install' first"; }

# The service scripts (seaweedfs, kafka, mariadb, notifier) define start() and status() and end with
# `service_main "$@"`; the helpers below hold what they have in common.

# already_running NAME [PROBE...]: succeed if NAME's recorded process is alive and PROBE (if given) answers,
# so that start() can `already_running ... && return 0`. An alive process whose probe fails is started again.
already_running() {
  local name="$1" pid; shift
  pid="$(pid_of "$name")"
  [[ -n "$pid" ]] || return 1
  log "already running (pid $pid)"
  (( $# == 0 )) || "$@"
}

# service_status NAME [FAILED OK PROBE...]: fail unless NAME's recorded process is alive and PROBE answers.
# Logs "pid P alive but FAILED" or "running (pid P), OK"; without a probe, just "running (pid P)".
service_status() {
  local name="$1" pid; shift
  pid="$(pid_of "$name")"
  [[ -n "$pid" ]] || { log "not running"; return 1; }
  if (( $# == 0 )); then log "running (pid $pid)"; return 0; fi
  local failed="$1" ok="$2"; shift 2
  "$@" || { log "pid $pid alive but $failed"; return 1; }
  log "running (pid $pid), $ok"
}

# service_main "$@": dispatch start|stop|status to the script's start, stop_pid $NAME and status; else usage, exit 2.
service_main() {
  # shellcheck disable=SC2153  # NAME is set by the script that sources this file.
  case "${1:-}" in
    start) start ;;
    stop) stop_pid "$NAME" ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
  esac
}
