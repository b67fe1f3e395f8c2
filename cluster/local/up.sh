#!/usr/bin/env bash
# Start the whole local stack (idempotent): SeaweedFS, Kafka, MariaDB, Orthanc, the LDAP directory, the demo RIS,
# Prometheus, the two notifiers; then migrate.
source "$(dirname "$0")/lib.sh"
# The research export's pseudonymisation key (xraylab/research_export.py), generated once and kept.
[[ -n "$(env_get XRAYLAB_RESEARCH_KEY)" ]] || env_set XRAYLAB_RESEARCH_KEY "$(random_secret)"
# The model signing key pair (training signs, serving trusts), made once and kept.
"$LOCAL_DIR/keys.sh" start
"$LOCAL_DIR/seaweedfs.sh" start
"$LOCAL_DIR/kafka.sh" start
"$LOCAL_DIR/mariadb.sh" start
"$LOCAL_DIR/orthanc.sh" start
"$LOCAL_DIR/slapd.sh" start
"$LOCAL_DIR/ris.sh" start
"$LOCAL_DIR/prometheus.sh" start
"$LOCAL_DIR/notifier.sh" start
"$LOCAL_DIR/pacs-notifier.sh" start
"$ROOT/.venv/bin/xraylab" db upgrade
"$ROOT/.venv/bin/xraylab" db upgrade --database mariadb
log "local stack up; settings and generated credentials in $ENV_FILE"
