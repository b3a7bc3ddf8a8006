#!/usr/bin/env bash
# TLS interception speed, side by side in one run:
#   - HTTPS requests/s and p50/p99 with wrk (keep-alive, 50 connections) to an nginx TLS
#     origin: direct, through nginx terminating TLS and re-encrypting to the origin
#     (upstream keep-alive, session reuse), through a tapline `https` mapping with
#     --intercept-tls (the same two legs), and through mitmproxy in reverse mode;
#   - new client-leg handshakes per second: the same paths with `Connection: close`, so
#     every request is a new TLS connection (upstream legs pooled by all three);
#   - tapline's leaf-certificate cache (minted vs reused, from its summary line);
#   - pgbench -S with sslmode=require: direct to a PostgreSQL with ssl=on, through an
#     intercepted psql mapping (--upstream-tls require, upstream verified), and through
#     PgBouncer terminating TLS on both legs (session mode, server_tls_sslmode verify-full).
#   bench/tls.sh [SECONDS]   (default 10; needs nginx, wrk, openssl, PostgreSQL, pgbench,
#                             pgbouncer and mitmproxy from scripts/install-deps.sh bench)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init tls
secs=${1:-10}
conns=50
require wrk nginx openssl python3 pgbench pgbouncer
mitmdump=/opt/tapline-bench-venv/bin/mitmdump
[ -x "$mitmdump" ] || bench_fail "mitmproxy is required (scripts/install-deps.sh bench)"
bench_build

origin=$(free_port); nginx_tls=$(free_port); mapping=$(free_port); mitm=$(free_port)

# A CA and one certificate for localhost/127.0.0.1 (the origin's and nginx's own).
(
    cd "$work"
    ossl() { openssl "$@" >/dev/null 2>&1; }
    ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" -keyout ca.key -out ca.pem
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
    ossl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem
)

tls_certs="ssl_certificate $work/server.pem; ssl_certificate_key $work/server.key;"
nginx_conf origin 1 "$tls_certs server { listen 127.0.0.1:$origin ssl; location / { return 200 \"hello from the origin\\n\"; } }"
# nginx terminating TLS and re-encrypting, as many workers as tapline has runtime threads.
nginx_conf reverse "$(nproc)" "$tls_certs upstream origin { server 127.0.0.1:$origin; keepalive 128; }
    server { listen 127.0.0.1:$nginx_tls ssl; location / { proxy_pass https://origin;
        proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_ssl_session_reuse on;
        proxy_ssl_server_name on; proxy_ssl_name localhost;
        proxy_ssl_verify on; proxy_ssl_trusted_certificate $work/ca.pem; } }"
nginx -c "$work/origin/nginx.conf" -p "$work/origin" & pids+=($!)
nginx -c "$work/reverse/nginx.conf" -p "$work/reverse" & pids+=($!)
"$tapline" proxy --quiet --disable-http-proxy --proxy "$mapping=https://localhost:$origin" \
    --intercept-tls --ca-dir "$work/tapline-ca" --upstream-ca "$work/ca.pem" \
    2>"$work/tapline.err" & tapline_pid=$!; pids+=($tapline_pid)
"$mitmdump" --mode "reverse:https://localhost:$origin" --listen-host 127.0.0.1 \
    --listen-port "$mitm" --ssl-insecure -q --set confdir="$work/mitm" & pids+=($!)
wait_port "$origin"; wait_port "$nginx_tls"; wait_port "$mapping"; wait_port "$mitm"

# https URL [wrk args...] -> "requests/s p50_ms p99_ms" (closed connections are the point of
# the handshake rows, so wrk's socket errors are not failures here)
https() { WRK_SOCKET_ERRORS=ok wrk_stats "$@"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }

echo "tapline TLS bench: ${secs}s per run, $(nproc) cores, wrk -t2 -c$conns, $(date -u +%FT%TZ), load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "## HTTPS requests through TLS-terminating proxies (keep-alive; small response)"
printf '%-44s %10s %9s %9s %10s\n' path req/s "p50 ms" "p99 ms" "vs nginx"
declare -A rps
paths=(
    "direct to the TLS origin|https://127.0.0.1:$origin/"
    "nginx terminating TLS, TLS upstream|https://127.0.0.1:$nginx_tls/"
    "tapline https mapping, --intercept-tls|https://127.0.0.1:$mapping/"
    "mitmproxy reverse (mitmdump)|https://127.0.0.1:$mitm/"
)
declare -A lines
for entry in "${paths[@]}"; do
    name=${entry%%|*}; url=${entry#*|}
    read -r r p50 p99 < <(https "$url")
    rps[$name]=$r; lines[$name]="$p50 $p99"
done
for entry in "${paths[@]}"; do
    name=${entry%%|*}; read -r p50 p99 <<<"${lines[$name]}"
    printf '%-44s %10s %9s %9s %10s\n' "$name" "${rps[$name]}" "$p50" "$p99" \
        "$(ratio "${rps[$name]}" "${rps[nginx terminating TLS, TLS upstream]}")"
done
t=${rps[tapline https mapping, --intercept-tls]}
echo "tapline vs nginx: $(ratio "$t" "${rps[nginx terminating TLS, TLS upstream]}")x (target >= 0.7);" \
     "vs mitmproxy: $(ratio "$t" "${rps[mitmproxy reverse (mitmdump)]}")x (target >= 50)"

echo
echo "## New client-leg TLS handshakes per second (Connection: close: one handshake per request)"
printf '%-44s %12s\n' path handshakes/s
for entry in "${paths[@]:1:2}"; do
    name=${entry%%|*}; url=${entry#*|}
    read -r r _ _ < <(https "$url" -H "Connection: close")
    printf '%-44s %12s\n' "$name" "$r"
done

kill -TERM "$tapline_pid"; wait "$tapline_pid" 2>/dev/null || true
echo
echo "## tapline's own count"
grep "tapline: TLS:" "$work/tapline.err" || true

# --- PostgreSQL over TLS: tapline's psql mapping vs PgBouncer, both legs TLS -------------
pg=$(free_port); pg_map=$(free_port); bouncer=$(free_port)
start_postgres "$pg"
cp "$work/server.pem" "$work/server.key" "$work/pg/" && chown postgres "$work/pg/server.pem" "$work/pg/server.key"
chmod 600 "$work/pg/server.key"
PGSSLMODE=disable psql -X -q -h 127.0.0.1 -p "$pg" -U postgres -d postgres \
    -c "ALTER SYSTEM SET ssl_cert_file = '$work/pg/server.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$work/pg/server.key'" -c "ALTER SYSTEM SET ssl = on" \
    -c "SELECT pg_reload_conf()" >/dev/null
PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$pg" -U postgres -i -q -s 1 postgres >/dev/null 2>&1
chmod 644 "$work/server.key"
start_pgbouncer "$bouncer" "$pg" "client_tls_sslmode = require
client_tls_cert_file = $work/server.pem
client_tls_key_file = $work/server.key
server_tls_sslmode = verify-full
server_tls_ca_file = $work/ca.pem"
"$tapline" proxy --quiet --disable-http-proxy --proxy "$pg_map=psql://127.0.0.1:$pg" \
    --intercept-tls --ca-dir "$work/tapline-ca" --upstream-ca "$work/ca.pem" --upstream-tls require \
    2>"$work/tapline-pg.err" & pids+=($!)
wait_port "$bouncer"; wait_port "$pg_map"

# tps PORT -> transactions per second of pgbench -S over sslmode=require
tps() {
    PGSSLMODE=require timeout $((secs + 60)) pgbench -h 127.0.0.1 -p "$1" -U postgres -S -c 8 -j 2 \
        -T "$secs" postgres 2>/dev/null | awk '/^tps/ { print $3; exit }'
}
echo
echo "## pgbench -S -c 8, sslmode=require (TLS on both legs of each relay)"
printf '%-44s %10s %9s\n' path TPS "vs PgBouncer"
t_direct=$(tps "$pg"); t_bouncer=$(tps "$bouncer"); t_tapline=$(tps "$pg_map")
printf '%-44s %10s %9s\n' "direct (ssl=on)" "$t_direct" "$(ratio "$t_direct" "$t_bouncer")"
printf '%-44s %10s %9s\n' "PgBouncer (session, TLS client and server)" "$t_bouncer" "1.00"
printf '%-44s %10s %9s\n' "tapline psql mapping, --intercept-tls" "$t_tapline" "$(ratio "$t_tapline" "$t_bouncer")"
echo "tapline vs PgBouncer: $(ratio "$t_tapline" "$t_bouncer")x (target >= 1.0)"
