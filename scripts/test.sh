#!/usr/bin/env bash
# Runs every test: unit, property and end-to-end (real processes on loopback).
# Installs the real peers the tests start (PostgreSQL, curl, tshark, rsyslog, grpcio…) first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
