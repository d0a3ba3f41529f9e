#!/usr/bin/env bash
# Node-RED and node-red-contrib-influxdb, the versions pinned in package-lock.json,
# into benchmarks/nodered/node_modules (git-ignored), for benchmarks/bench_ingest.py (n).
# Needs node >= 18.5 and npm. bench_ingest.py runs this itself on first use.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --omit=optional
