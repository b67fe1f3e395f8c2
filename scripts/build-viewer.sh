#!/usr/bin/env bash
# Builds the review app's image viewer (ui/viewer: Cornerstone3D core and tools, bundled by esbuild) into
# ui/viewer/dist/xraylab-viewer.js, which the app serves itself (ui/viewer_assets.py): nothing is loaded from a
# network when the app runs. The packages are the exact versions of ui/viewer/package-lock.json (npm ci), from
# the npm registry at build time. Does nothing when the bundle is newer than its sources and lock file.
set -euo pipefail
cd "$(dirname "$0")/../ui/viewer"
out=dist/xraylab-viewer.js
if [[ -f $out && $out -nt package-lock.json && $out -nt package.json && $out -nt src/main.js ]]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "build-viewer: npm is missing (scripts/system-deps.sh installs Debian's nodejs and npm)" >&2
  exit 1
fi
umask 022  # a bundle of public code, served to every browser
npm ci --no-audit --no-fund --loglevel=error
npm run -s build
echo "build-viewer: $(du -h "$out" | cut -f1) $out"
