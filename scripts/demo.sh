#!/usr/bin/env bash
# The demo: local stack up, the shipped model trained on real X-rays installed and promoted, 24 X-rays through
# the pipeline (real test films from ../shared where present, generated otherwise), a summary, then the review
# app until Ctrl-C (the stack is stopped on the way out).
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'bash cluster/local/down.sh || true' EXIT
bash cluster/local/up.sh
# The demo PACS is one hospital's: its studies land in that hospital (whatever their InstitutionName says, or
# where they carry none), one the demo doctor reads (ingest/uploader.py HOSPITALS). The tests' stack leaves it
# empty: there each PACS study's InstitutionName names its hospital.
export XRAYLAB_ORTHANC_HOSPITAL="${XRAYLAB_ORTHANC_HOSPITAL:-st-mary}"
# The generated settings stay in the env file that xraylab reads (never exported: no secret in Ray's workers).
.venv/bin/xraylab demo "$@"
