#!/usr/bin/env bash
# Decoding speed: HTTP and PostgreSQL transactions per second that `tapline capture -r`
# decodes from a capture, side by side with tshark listing the same statements and requests.
#
# Records its own capture with tcpdump on lo (needs root): wrk against `tapline demo`
# (keep-alive GETs) and pgbench against a throwaway PostgreSQL cluster (simple and
# extended/prepared protocol), a few seconds each. Then times, best of RUNS:
#   tapline capture -r F --quiet          (decode and pair, no output: details no one reads,
#                                          PostgreSQL message fields and the head copies in
#                                          HTTP transactions, are not built)
#   tapline capture -r F --json >/dev/null (decode, pair and write every event as JSON)
#   tshark -r F -d tcp.port==P,pgsql -Y pgsql.query -T fields -e pgsql.query
#     + tshark -r F -d tcp.port==H,http -Y http.request -T fields -e http.request.method -e http.request.uri
#     + tshark -r F -d tcp.port==H,http -Y http.response -T fields -e http.response.code
#   tshark in one pass with the three filters or-ed and the four fields
# and prints transactions/s and the ratios. Loopback only; bounded by SECONDS_EACH.
#
# Usage: bench/decode.sh   (env: SECONDS_EACH=3 RUNS=3 KEEP=1 to keep the capture)
set -euo pipefail

SECONDS_EACH=${SECONDS_EACH:-3}
RUNS=${RUNS:-3}
. "$(dirname "$0")/lib.sh"
bench_init decode
require_root "tcpdump on lo"
require tcpdump tshark wrk python3 pgbench
WORK=$work
PGBIN=$(pg_bin)
now() { date +%s.%N; }

echo "== building tapline (release)"
bench_build
TAPLINE=$tapline

HTTP_PORT=$(free_port)
PG_PORT=$(free_port)

echo "== starting tapline demo on :$HTTP_PORT and PostgreSQL on :$PG_PORT"
"$TAPLINE" demo --address "127.0.0.1:$HTTP_PORT" 2>/dev/null &
pids+=($!)
start_postgres "$PG_PORT"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break
    sleep 0.1
done

CAP="$WORK/traffic.pcap"
echo "== recording $CAP (${SECONDS_EACH}s of HTTP, ${SECONDS_EACH}s of each PostgreSQL protocol)"
tcpdump -i lo --immediate-mode -s 0 -B 65536 -w "$CAP" "tcp port $HTTP_PORT or tcp port $PG_PORT" 2>"$WORK/tcpdump.err" &
TCPDUMP=$!
pids+=($TCPDUMP)
for _ in $(seq 100); do grep -q "listening on" "$WORK/tcpdump.err" && break; sleep 0.1; done

wrk -t1 -c4 -d"${SECONDS_EACH}s" "http://127.0.0.1:$HTTP_PORT/" >/dev/null
printf '\\set id random(1, 1000)\nSELECT :id AS n, repeat(%s, 20) AS s;\n' "'x'" >"$WORK/select.sql"
for mode in simple prepared; do
    PGSSLMODE=disable "$PGBIN/pgbench" -n -M "$mode" -c 2 -T "$SECONDS_EACH" -f "$WORK/select.sql" \
        -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null
done
sleep 1
kill -INT "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null || true
grep -E "captured|dropped" "$WORK/tcpdump.err" || true
SIZE=$(stat -c %s "$CAP")

# Best wall time of RUNS runs of a command (stdout discarded).
best() {
    local best_t=""
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
        best_t=$(python3 -c "import sys; a=float(sys.argv[1])-float(sys.argv[2]); b=sys.argv[3]; print(a if not b or a<float(b) else b)" "$t1" "$t0" "$best_t")
    done
    echo "$best_t"
}

tshark_one_pass() {
    tshark -r "$CAP" -d "tcp.port==$PG_PORT,pgsql" -d "tcp.port==$HTTP_PORT,http" \
        -Y "pgsql.query || http.request || http.response" -T fields \
        -e pgsql.query -e http.request.method -e http.request.uri -e http.response.code
}

tshark_all() {
    tshark -r "$CAP" -d "tcp.port==$PG_PORT,pgsql" -Y pgsql.query -T fields -e pgsql.query
    tshark -r "$CAP" -d "tcp.port==$HTTP_PORT,http" -Y http.request -T fields -e http.request.method -e http.request.uri
    tshark -r "$CAP" -d "tcp.port==$HTTP_PORT,http" -Y http.response -T fields -e http.response.code
}

echo "== counting"
"$TAPLINE" capture -r "$CAP" --json 2>/dev/null >"$WORK/events.jsonl"
TX=$(grep -c '"kind":"transaction"' "$WORK/events.jsonl" || true)
TX_HTTP=$(grep '"kind":"transaction"' "$WORK/events.jsonl" | grep -c '"protocol":"http"' || true)
TX_PG=$(grep '"kind":"transaction"' "$WORK/events.jsonl" | grep -c '"protocol":"postgres"' || true)
TS_PG=$(tshark -r "$CAP" -d "tcp.port==$PG_PORT,pgsql" -Y pgsql.query -T fields -e pgsql.query 2>/dev/null | wc -l)
TS_HTTP=$(tshark -r "$CAP" -d "tcp.port==$HTTP_PORT,http" -Y http.request -T fields -e http.request.uri 2>/dev/null | wc -l)
echo "capture: $SIZE bytes; tapline transactions: $TX (HTTP $TX_HTTP, PostgreSQL $TX_PG)"
echo "tshark lines: $TS_PG with query texts (simple queries and Parse; prepared executions carry none)," \
     "$TS_HTTP with request URIs"

echo "== timing (best of $RUNS)"
T_QUIET=$(best "$TAPLINE" capture -r "$CAP" --quiet)
T_JSON=$(best "$TAPLINE" capture -r "$CAP" --json)
T_TSHARK=$(best tshark_all)
T_TSHARK1=$(best tshark_one_pass)

python3 - "$TX" "$T_QUIET" "$T_JSON" "$T_TSHARK" "$T_TSHARK1" "$SIZE" <<'EOF'
import sys
tx, quiet, js, ts, ts1, size = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6])
print("transactions/s = tapline's transaction count in the file / wall time; ratios are tshark's")
print("time over each row's time (three tshark runs, and tshark's single combined pass)")
print(f"{'decoder':<56}{'seconds':>9}{'tx/s':>10}{'MB/s':>7}{'vs 3 runs':>11}{'vs 1 pass':>11}")
for name, t in [("tapline capture -r F --quiet", quiet),
                ("tapline capture -r F --json >/dev/null", js),
                ("tshark: 3 runs (pgsql.query, http.request, http.response)", ts),
                ("tshark: 1 pass, filters or-ed", ts1)]:
    print(f"{name:<56}{t:>9.3f}{tx / t:>10,.0f}{size / t / 1e6:>7.1f}{ts / t:>10.1f}x{ts1 / t:>10.1f}x")
EOF
