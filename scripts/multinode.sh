#!/usr/bin/env bash
# The multi-node suite at full size (make multinode): a Ray head and a second node started with `ray start`,
# 1,000 uploads while the second node is killed, then a training job submitted with `ray job submit`; on a
# stack of its own (.xraylab-multinode). make test runs the same tests with 150 uploads.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/own-stack.sh
own_stack multinode
export XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S="${XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S:-0}"  # as scripts/test.sh
export XRAYLAB_MULTINODE_UPLOADS="${XRAYLAB_MULTINODE_UPLOADS:-1000}"
.venv/bin/pytest tests/multinode -p no:cacheprovider -s "$@"
