#!/usr/bin/env bash
# A short fuzzing run of every cargo-fuzz target (default 20 s each; FUZZ_SECONDS=N to change),
# seeded with the committed corpora plus, for the capture targets, the shared captures in
# ../shared/pcaps when present. Any crash fails the run and leaves its input in
# fuzz/artifacts/TARGET/.
#
# Needs cargo-fuzz (installed here with `cargo install cargo-fuzz --locked` when missing) and a
# compiler that accepts -Z flags: a nightly toolchain, or the stable one with RUSTC_BOOTSTRAP=1,
# which this script sets (it builds with the one stable toolchain).
#   fuzz/smoke.sh                  # every target
#   fuzz/smoke.sh capture_file     # some targets
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

shared=../../shared/pcaps
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT

# Seeds for packet_reassembly: each shared capture's frames, length-prefixed, behind the
# mode byte of its link type (even modes = frames; link index in bits 2..).
if [ -d "$shared" ]; then
  python3 - "$shared" "$seeds" <<'PY'
import os, struct, sys
src, out = sys.argv[1], sys.argv[2]
links = {1: 0, 0: 1, 108: 2, 101: 3, 113: 4, 276: 5}
for name in sorted(os.listdir(src)):
    if not name.endswith(".pcap"):
        continue
    data = open(os.path.join(src, name), "rb").read()
    if len(data) < 24 or data[:4] != b"\xd4\xc3\xb2\xa1":
        continue
    snap, link = struct.unpack("<II", data[16:24])
    if link not in links:
        continue
    frames, at = [], 24
    while at + 16 <= len(data) and len(frames) < 64:
        incl = struct.unpack("<I", data[at + 8:at + 12])[0]
        if incl > 65535 or at + 16 + incl > len(data):
            break
        frames.append(data[at + 16:at + 16 + incl])
        at += 16 + incl
    blob = bytes([links[link] << 2]) + b"".join(struct.pack("<H", len(f)) + f for f in frames)
    open(os.path.join(out, name + ".seed"), "wb").write(blob)
PY
fi

cargo fuzz build >/dev/null 2>&1 || cargo fuzz build
for t in "${targets[@]}"; do
  # Run on a copy of the committed corpus, so a smoke run leaves the tree as it was.
  work="$seeds/corpus-$t"
  mkdir -p "$work"
  if [ -d "corpus/$t" ]; then cp -r "corpus/$t/." "$work/" 2>/dev/null || true; fi
  extra=()
  case "$t" in
    packet_reassembly) extra=("$seeds") ;;
    capture_file) [ -d "$shared" ] && extra=("$shared") ;;
  esac
  echo "fuzz: $t for ${seconds}s" >&2
  cargo fuzz run "$t" "$work" "${extra[@]}" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$seeds/$t.log" || { tail -40 "$seeds/$t.log" >&2; echo "fuzz: $t FAILED" >&2; exit 1; }
  grep -E "stat::number_of_executed_units|Done" "$seeds/$t.log" | tail -2 >&2 || true
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
