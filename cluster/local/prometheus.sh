#!/usr/bin/env bash
# The project's own Prometheus (Debian's `prometheus`): own config, TSDB and rules under the state folder,
# listening on 127.0.0.1 only. It scrapes the metrics export port of the Ray node the project starts
# (XRAYLAB_RAY_METRICS_PORT: Ray Serve's metrics, the ingest actors' and the monitor's gauge) and itself,
# and evaluates the rules that xraylab.monitor.prom_rules generates from the thresholds in effect
# (recording rules xraylab:<health metric>, alerts XraylabXxxWarning/Critical). Never starts, stops or
# reads a system instance. Rules can be regenerated while it runs: write them, then SIGHUP the PID recorded in
# $RUN/prometheus.pid (xraylab.monitor.prom_rules.reload_prometheus does both). No --web.enable-lifecycle: the
# HTTP API on its port cannot reload or shut it down (POST /-/reload and /-/quit are refused).
# Usage: prometheus.sh start|stop|status
source "$(dirname "$0")/lib.sh"
NAME=prometheus
DIR="$STATE/prometheus"
SCRAPE_S="${XRAYLAB_PROMETHEUS_SCRAPE_S:-5}"

write_config() {
  [[ "$SCRAPE_S" =~ ^[0-9]+$ && "$SCRAPE_S" -ge 1 ]] \
    || die "XRAYLAB_PROMETHEUS_SCRAPE_S must be a whole number of seconds >= 1, not '$SCRAPE_S'"
  cat > "$DIR/prometheus.yml.tmp" <<YAML
# Written by cluster/local/prometheus.sh at every start; edits are lost.
global:
  scrape_interval: ${SCRAPE_S}s
  evaluation_interval: ${SCRAPE_S}s
rule_files:
  - "$DIR/rules/*.yml"
scrape_configs:
  - job_name: ray
    static_configs:
      - targets: ["127.0.0.1:$XRAYLAB_RAY_METRICS_PORT"]
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$XRAYLAB_PROMETHEUS_PORT"]
YAML
  mv "$DIR/prometheus.yml.tmp" "$DIR/prometheus.yml"
}

start() {
  need_venv
  local url="http://127.0.0.1:$XRAYLAB_PROMETHEUS_PORT"
  already_running $NAME probe prometheus "$url" && return 0
  install_if_missing prometheus prometheus
  mkdir -p "$DIR/data" "$DIR/rules"
  write_config
  # The rules from the thresholds in effect (evaluated every SCRAPE_S seconds, which `for:` counts in).
  XRAYLAB_PROMETHEUS_SCRAPE_S="$SCRAPE_S" "$PY" -m xraylab.monitor.prom_rules --out "$DIR/rules/xraylab.yml" \
    || die "could not generate the alerting rules"
  "$(find_bin promtool)" check config "$DIR/prometheus.yml" >"$RUN/prometheus-check.log" 2>&1 \
    || { tail -n 20 "$RUN/prometheus-check.log" >&2; die "promtool rejects $DIR/prometheus.yml"; }
  port_free "$XRAYLAB_PROMETHEUS_PORT"
  log "starting prometheus on $url (scraping Ray at 127.0.0.1:$XRAYLAB_RAY_METRICS_PORT every ${SCRAPE_S}s)"
  "$(find_bin prometheus)" --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
    --storage.tsdb.retention.time=15d --web.listen-address="127.0.0.1:$XRAYLAB_PROMETHEUS_PORT" \
    >"$RUN/$NAME.log" 2>&1 &
  echo $! > "$RUN/$NAME.pid"
  wait_ready $NAME 60 probe prometheus "$url" || die "Prometheus did not answer $url/-/ready"
  log "ready (pid $(pid_of $NAME))"
}

status() {
  local url="http://127.0.0.1:$XRAYLAB_PROMETHEUS_PORT"
  service_status $NAME "$url/-/ready fails" "$url/-/ready answers" probe prometheus "$url"
}

service_main "$@"
