#!/usr/bin/env bash
# Stop what up.sh started (only the PIDs it recorded), in reverse order.
source "$(dirname "$0")/lib.sh"
"$LOCAL_DIR/pacs-notifier.sh" stop
"$LOCAL_DIR/notifier.sh" stop
"$LOCAL_DIR/prometheus.sh" stop
"$LOCAL_DIR/ris.sh" stop
"$LOCAL_DIR/slapd.sh" stop
"$LOCAL_DIR/orthanc.sh" stop
"$LOCAL_DIR/mariadb.sh" stop
"$LOCAL_DIR/kafka.sh" stop
"$LOCAL_DIR/seaweedfs.sh" stop
