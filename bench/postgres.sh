#!/usr/bin/env bash
# A psql mapping's cost, and the cost of judging its messages, side by side in one run:
# pgbench -S (-c 8 -j 2, cleartext) directly to PostgreSQL; through PgBouncer in session mode
# (the peer relay); through a tapline psql mapping; the mapping with one --with-sql-error rule
# that matches nothing (sessions then relay message by message); the mapping with a Lua
# on_message plugin that only counts Query and Parse, asking for just those (`messages`), and
# the same plugin asking for every message. Each path runs ROUNDS times,
# interleaved, and the median is reported.
#   bench/postgres.sh [SECONDS] [ROUNDS]   (default 10 s, 3 rounds; needs PostgreSQL, pgbench
#                                           and pgbouncer from scripts/install-deps.sh bench)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init postgres
secs=${1:-10}
rounds=${2:-3}
require pgbench pgbouncer python3
require_root "PostgreSQL runs as the postgres user"
bench_build

pg=$(free_port); bouncer=$(free_port); mapping=$(free_port); faulted=$(free_port); counted=$(free_port)
counted_all=$(free_port)
start_postgres "$pg"
pgbench -h 127.0.0.1 -p "$pg" -U postgres -i -q -s 1 postgres >/dev/null 2>&1

start_pgbouncer "$bouncer" "$pg"

cat >"$work/count.lua" <<'LUA'
local p = { name = "count", messages = { "Query", "Parse" } }
function p.on_message(msg)
    if msg.type == "Query" or msg.type == "Parse" then
        tap.shared:incr("statements", 1)
    end
end
return p
LUA
run_mapping() { # PORT EXTRA... : a tapline psql mapping on PORT
    local port=$1; shift
    "$tapline" proxy --quiet --disable-http-proxy --proxy "$port=psql://127.0.0.1:$pg" "$@" \
        2>>"$work/tapline.err" & pids+=($!)
}
run_mapping "$mapping"
run_mapping "$faulted" --with-sql-error --sql-error-code 40001 --sql-error-match 'no_such_table_xyz'
run_mapping "$counted" --plugin "$work/count.lua"
sed 's/, messages = { "Query", "Parse" }//' "$work/count.lua" >"$work/count_all.lua"
run_mapping "$counted_all" --plugin "$work/count_all.lua"
wait_port "$bouncer"; wait_port "$mapping"; wait_port "$faulted"; wait_port "$counted"; wait_port "$counted_all"

# tps PORT -> transactions per second of pgbench -S
tps() {
    PGSSLMODE=disable timeout $((secs + 60)) pgbench -h 127.0.0.1 -p "$1" -U postgres -S -c 8 -j 2 \
        -T "$secs" postgres 2>/dev/null | awk '/^tps/ { print $3; exit }'
}
median() { python3 -c 'import sys,statistics; print("%.0f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }

names=(direct pgbouncer mapping faulted counted counted_all)
ports=("$pg" "$bouncer" "$mapping" "$faulted" "$counted" "$counted_all")
declare -A runs
for r in $(seq "$rounds"); do
    for i in "${!names[@]}"; do
        runs[${names[$i]}]+=" $(tps "${ports[$i]}")"
    done
done
declare -A med
for n in "${names[@]}"; do
    # shellcheck disable=SC2086
    med[$n]=$(median ${runs[$n]})
done

echo "tapline PostgreSQL bench: pgbench -S -c 8 -j 2, ${secs}s x $rounds rounds (median), $(nproc) cores, $(date -u +%FT%TZ), load $(cut -d' ' -f1 /proc/loadavg)"
echo
printf '%-52s %8s %11s %11s  %s\n' path TPS "vs bouncer" "vs mapping" "runs"
row() { printf '%-52s %8s %11s %11s  %s\n' "$1" "${med[$2]}" "$(ratio "${med[$2]}" "${med[pgbouncer]}")" "$(ratio "${med[$2]}" "${med[mapping]}")" "${runs[$2]}"; }
row "direct" direct
row "PgBouncer, session mode" pgbouncer
row "tapline psql mapping" mapping
row "mapping + --with-sql-error matching nothing" faulted
row "mapping + Lua counting Query/Parse (messages list)" counted
row "mapping + the same plugin, every message" counted_all
echo
echo "mapping vs PgBouncer: $(ratio "${med[mapping]}" "${med[pgbouncer]}")x (target >= 1.0)"
echo "with a SQL fault matching nothing: $(ratio "${med[faulted]}" "${med[mapping]}")x of the mapping (target >= 0.95)"
echo "with the counting plugin: $(ratio "${med[counted]}" "${med[mapping]}")x of the mapping (target >= 0.85)"
