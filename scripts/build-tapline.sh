#!/usr/bin/env bash
# Builds the tapline binary and prints its path: wherever cargo put it (a shared
# CARGO_TARGET_DIR, a `build.target-dir` in a cargo config, or ./target).
#   scripts/build-tapline.sh [--release]
# Diagnostics go to stderr as usual; only the path goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build "$@" --quiet --bin tapline --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
path = None
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "tapline" \
            and msg.get("executable"):
        path = msg["executable"]
if not path:
    sys.exit("scripts/build-tapline.sh: cargo built no tapline binary")
print(path)
'
