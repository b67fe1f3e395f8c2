#!/usr/bin/env bash
# The model signing key pair (xraylab/registry/signing.py), made once and kept: the private key that training signs
# every published model version with (XRAYLAB_MODEL_SIGNING_KEY, default $STATE/keys/model-signing.key, mode 600 in
# a folder of mode 700) and its public line in the keys serving trusts (XRAYLAB_MODEL_TRUSTED_KEYS, default
# $STATE/keys/model-trusted.pub): serving loads no model version that a trusted key did not sign. No process: start
# makes the pair where there is none (never overwriting a key), stop keeps it, status checks it is there and trusted.
# On a real deployment only training holds the private key; serving nodes get the trusted file alone.
# Usage: keys.sh start|stop|status
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  start) "$ROOT/.venv/bin/xraylab" models keygen --name "local training key ($(basename "$STATE"))" ;;
  stop) log "model signing keys kept (delete them to make new ones: every version they signed is then refused)" ;;
  status) "$ROOT/.venv/bin/xraylab" models keygen --check ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
