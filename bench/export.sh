#!/usr/bin/env bash
# Export speed: events per second that `tapline capture -r` exports to NATS JetStream and to
# Redis Streams, every one acknowledged by the broker, against writing the same events as JSON
# lines to a file (--output), in one run:
#   1. synthesises a pcap of FLOWS concurrent HTTP flows (synth_flows: 5 packets each, so
#      200,000 flows are 1,000,000 packets; each flow makes flow_start, http_request,
#      http_response, transaction and, at the end of the file, flow_end: 5 events);
#   2. reads it with --quiet --output F.jsonl (the file row), then with --export to a fresh
#      `nats-server -js` and a fresh `redis-server` on loopback (data in the work directory);
#      reading the file is faster than any broker takes events, so most of them pass through
#      the spool (--export-spool-max 4GiB keeps them all), and a run ends once the broker
#      acknowledged every event (--export-flush-wait 300s lets the end of the file wait for
#      that); the script checks that the end-of-run stats say every event was acknowledged;
#   prints seconds, events/s and the ratio to the file row (best of 3; the whole run is
#   timed, reading and decoding included, as for the file).
#
#   bench/export.sh [FLOWS]    (default 200000; needs nats-server, redis-server, python3)
#
# Loopback only; installs nothing; every process it starts is stopped by PID on exit.
set -euo pipefail

flows="${1:-200000}"
. "$(dirname "$0")/lib.sh"
bench_init export
require nats-server redis-server python3 cargo
bench_build

pcap="$work/flows.pcap"
synth_flows "$pcap" "$flows"
echo "synthesised $((flows * 5)) packets in $flows HTTP flows"

nats=$(free_port); redis=$(free_port)
mkdir -p "$work/nats" "$work/redis"
nats-server -js -a 127.0.0.1 -p "$nats" -sd "$work/nats" >"$work/nats.log" 2>&1 & pids+=($!)
redis-server --port "$redis" --bind 127.0.0.1 --save '' --dir "$work/redis" >"$work/redis.log" 2>&1 & pids+=($!)
wait_port "$nats"; wait_port "$redis"

# run_once ARGS...: one capture run; prints "<seconds> <events> <acked>" (acked: - without
# an export).
run_once() {
    local start end
    rm -rf "$work/spool"
    start=$(date +%s.%N)
    "$tapline" capture -r "$pcap" --quiet --agent-id bench --export-spool "$work/spool" \
        --export-flush-wait 300s --export-spool-max 4GiB \
        "$@" >/dev/null 2>"$work/run.err" || bench_fail "tapline failed: $(tail -1 "$work/run.err")"
    end=$(date +%s.%N)
    local events acked
    events=$(grep '^tapline: events:' "$work/run.err" |
        grep -oE '[0-9]+' | awk '{ n += $1 } END { print n }')
    acked=$(grep -oE 'acknowledged \([^)]*\): [0-9]+' "$work/run.err" | awk '{ print $NF }')
    echo "$(awk "BEGIN{printf \"%.3f\", $end - $start}") $events ${acked:--}"
}

# best_of N ARGS...: the fastest of N runs, as run_once prints it; fails when an export run
# left events unacknowledged.
best_of() {
    local n=$1; shift
    local best="" line
    for _ in $(seq 1 "$n"); do
        line=$(run_once "$@")
        read -r t events acked <<<"$line"
        if [ "$acked" != - ] && [ "$acked" != "$events" ]; then
            grep -v '^tapline: capture:' "$work/run.err" >&2
            bench_fail "only $acked of $events events acknowledged ($*)"
        fi
        if [ -z "$best" ] || awk "BEGIN{exit !($t < ${best%% *})}"; then best=$line; fi
    done
    echo "$best"
}

read -r t_file events _ < <(best_of 3 --output "$work/events.jsonl")
read -r t_nats _ _ < <(best_of 3 --export "nats://127.0.0.1:$nats/tapline.bench" --export-maxlen 2000000)
read -r t_redis _ _ < <(best_of 3 --export "redis://127.0.0.1:$redis/tapline-bench" --export-maxlen 2000000)

rate() { awk "BEGIN{printf \"%.0f\", $events / $1}"; }
row() {
    printf '%-52s %8s s %10s events/s %6s\n' "$1" "$2" "$(rate "$2")" \
        "$(awk "BEGIN{printf \"%.2fx\", $t_file / $2}")"
}
echo "$events events per run, best of 3; ratio = file time / row time"
row "JSON lines to a file (--output F.jsonl)" "$t_file"
row "NATS JetStream, every publish acknowledged" "$t_nats"
row "Redis Streams XADD MAXLEN ~, pipelined" "$t_redis"
