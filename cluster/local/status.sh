#!/usr/bin/env bash
# Exit non-zero unless every service's PID is alive and its probe answers.
source "$(dirname "$0")/lib.sh"
rc=0
for svc in seaweedfs kafka mariadb orthanc slapd ris prometheus notifier pacs-notifier; do "$LOCAL_DIR/$svc.sh" status || rc=1; done
exit $rc
