#!/usr/bin/env bash
# Install the Debian packages the project needs, only those missing. Needs root (or sudo) when any is.
set -euo pipefail
missing=()
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || missing+=(mariadb-server)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v prometheus >/dev/null || [[ -x /usr/bin/prometheus ]] || missing+=(prometheus)  # the monitor's metrics (cluster/local/prometheus.sh)
command -v Orthanc >/dev/null || [[ -x /usr/sbin/Orthanc ]] || missing+=(orthanc)  # the PACS (cluster/local/orthanc.sh)
command -v slapd >/dev/null || [[ -x /usr/sbin/slapd ]] || missing+=(slapd)  # the LDAP directory (cluster/local/slapd.sh)
command -v ldapsearch >/dev/null || missing+=(ldap-utils)  # its clients: slapd.sh seeds and probes with them
command -v storescu >/dev/null || missing+=(dcmtk)  # DCMTK: storescu (the tests' modality), dsrdump (reads our SRs)
command -v dciodvfy >/dev/null || missing+=(dicom3tools)  # dciodvfy: validates the DICOM objects we write
command -v tesseract >/dev/null || missing+=(tesseract-ocr)  # OCR: burned-in text in research exports (xraylab/ocr.py)
command -v openssl >/dev/null || missing+=(openssl)  # the SeaweedFS gRPC certificates (cluster/local/seaweedfs.sh)
command -v node >/dev/null || missing+=(nodejs)  # builds the review app's viewer (scripts/build-viewer.sh)
command -v npm >/dev/null || missing+=(npm)
command -v python3.11 >/dev/null || missing+=(python3.11 python3.11-venv)
if (( ${#missing[@]} == 0 )); then exit 0; fi
echo "[system-deps] installing: ${missing[*]}" >&2
SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
$SUDO apt-get update -qq
# RUNLEVEL=1: do not start the distribution's MariaDB, Prometheus, Orthanc or slapd service; the project runs its own instances.
$SUDO env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
