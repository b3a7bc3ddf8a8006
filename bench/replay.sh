#!/usr/bin/env bash
# tapline replay's speed at --speed max, against the tools that do the same job, in one run:
#   PostgreSQL: tcpdump records pgbench -S -M prepared (-c 8 -j 2, N transactions) while the
#   server logs every statement as pgreplay reads it; then tapline replays the recording into
#   the same server (statements/s from its report), and pgreplay (Debian's `pgreplay`, when
#   installed) replays the log as fast as it can (-j, -s 1000).
#   HTTP: tcpdump records wrk (-t2 -c8) against `tapline demo`; tapline replays the recording
#   into the same demo (requests/s from its report), beside wrk's own rate against it.
#   bench/replay.sh [TRANSACTIONS_PER_CLIENT] [WRK_SECONDS]   (default 5000 and 5; needs
#                    PostgreSQL, pgbench, tcpdump and wrk from scripts/install-deps.sh bench)
# Memory: the capture is streamed (read on its own thread into a bounded queue), so the
# replay's peak RSS is printed too; it should not grow with the capture's size.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init replay
per_client=${1:-5000}
secs=${2:-5}
require pgbench tcpdump wrk python3
require_root "PostgreSQL runs as the postgres user; tcpdump records lo"
bench_build

pg=$(free_port); origin=$(free_port)
start_postgres "$pg"
psql_pg() { PGSSLMODE=disable psql -X -q -h 127.0.0.1 -p "$pg" -U postgres -d postgres -c "$1" >/dev/null; }
pgbench -h 127.0.0.1 -p "$pg" -U postgres -i -q -s 1 postgres >/dev/null 2>&1
# What pgreplay needs in the log (stderr format with its prefix), only while recording.
for setting in "log_statement = 'all'" "log_connections = on" "log_disconnections = on" \
    "log_line_prefix = '%m|%u|%d|%c|'" "log_min_error_statement = log"; do
    psql_pg "ALTER SYSTEM SET $setting"
done
psql_pg "SELECT pg_reload_conf()"
log_start=$(wc -c <"$work/pg/log")

# record FILE PORT COMMAND...: tcpdump on lo for tcp port PORT while COMMAND runs.
record() {
    local file=$1 port=$2; shift 2
    tcpdump -i lo --immediate-mode -U -B 65536 -s 0 -w "$file" "tcp port $port" 2>"$file.err" &
    local dump=$!
    pids+=("$dump")
    for _ in $(seq 1 100); do grep -qs "listening on" "$file.err" && break; sleep 0.1; done
    "$@"
    sleep 0.5
    kill "$dump"; wait "$dump" 2>/dev/null || true
    sed -n "s|^\(.*\) dropped by kernel|tcpdump, $(basename "$file"): \1 dropped|p" "$file.err" >&2
}

record "$work/pg.pcap" "$pg" \
    pgbench -h 127.0.0.1 -p "$pg" -U postgres -S -M prepared -c 8 -j 2 -t "$per_client" -n postgres >/dev/null
tail -c +"$((log_start + 1))" "$work/pg/log" >"$work/pgreplay.log"
psql_pg "ALTER SYSTEM RESET ALL"
psql_pg "SELECT pg_reload_conf()"

# replay_run NAME ARGS...: tapline replay at --speed max; prints exchanges/s, and the peak RSS.
replay_run() {
    local name=$1; shift
    /usr/bin/time -f "%M" -o "$work/$name.rss" "$tapline" replay --speed max --quiet \
        --report "$work/$name.json" "$@" >"$work/$name.out" 2>"$work/$name.err" \
        || { cat "$work/$name.err" >&2; bench_fail "tapline replay ($name) failed"; }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f %d %d" % (r["exchanges"] / (r["elapsed_ms"] / 1000), r["exchanges"], r["different"] + r["failed"]))' "$work/$name.json"
}
read -r pg_rate pg_count pg_diff < <(replay_run pg -r "$work/pg.pcap" --to "postgres=127.0.0.1:$pg" \
    --pg-user postgres --pg-database postgres --pg-sslmode disable)

pgreplay_rate="not installed"
if command -v pgreplay >/dev/null; then
    start=$(date +%s.%N)
    pgreplay -h 127.0.0.1 -p "$pg" -j -s 1000 "$work/pgreplay.log" >"$work/pgreplay.out" 2>&1 \
        || { tail -5 "$work/pgreplay.out" >&2; bench_fail "pgreplay failed"; }
    end=$(date +%s.%N)
    pgreplay_rate=$(python3 -c "print('%.0f' % ($pg_count / ($end - $start)))")
fi

"$tapline" demo --address "127.0.0.1:$origin" >/dev/null 2>&1 & pids+=($!)
wait_port "$origin"
wrk_rate=$(wrk -t2 -c8 -d"${secs}s" "http://127.0.0.1:$origin/" | awk '/^Requests\/sec/ { printf "%.0f", $2 }')
record "$work/http.pcap" "$origin" wrk -t2 -c8 -d"${secs}s" "http://127.0.0.1:$origin/" >/dev/null
read -r http_rate http_count http_diff < <(replay_run http -r "$work/http.pcap" --to "http=127.0.0.1:$origin")

echo "tapline replay bench, $(nproc) cores, $(date -u +%FT%TZ), load $(cut -d' ' -f1 /proc/loadavg)"
echo
printf '%-58s %12s\n' what "per second"
printf '%-58s %12s\n' "tapline replay, PostgreSQL ($pg_count statements, $pg_diff differ)" "$pg_rate"
printf '%-58s %12s\n' "pgreplay -j -s 1000, the same workload's log" "$pgreplay_rate"
printf '%-58s %12s\n' "tapline replay, HTTP ($http_count requests, $http_diff differ)" "$http_rate"
printf '%-58s %12s\n' "wrk -t2 -c8 against the same origin" "$wrk_rate"
echo
echo "PostgreSQL statements/s at --speed max: $pg_rate (target >= 20000)"
echo "peak RSS: PostgreSQL replay $(cat "$work/pg.rss") KiB ($(du -k "$work/pg.pcap" | cut -f1) KiB capture), HTTP replay $(cat "$work/http.rss") KiB ($(du -k "$work/http.pcap" | cut -f1) KiB capture)"
