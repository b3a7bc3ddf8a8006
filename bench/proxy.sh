#!/usr/bin/env bash
# Proxy speed, side by side in one run:
#   - tcp mapping throughput vs a direct loopback connection (iperf3, both directions), with
#     the TCP relays HAProxy (mode tcp, splice) and socat beside it when installed;
#   - HTTP requests/s and p50/p99 latency with wrk at 50 connections: direct to an nginx
#     origin, through nginx as a reverse proxy (upstream keep-alive), through tapline's
#     forward proxy (absolute-form requests from a wrk Lua script), through a tapline `http`
#     mapping (the reverse proxy nginx is compared with), through the forward proxy with a Lua
#     plugin that sets one request header and one response header, and through the forward
#     proxy with a no-op Python gRPC plugin (tests/grpc_plugins/noop_plugin.py) when grpcio
#     is there.
#
#   bench/proxy.sh [SECONDS_PER_RUN] [ROUNDS]        (defaults 10 and 3; needs wrk, iperf3,
#                                                    nginx, python3)
#   TAPLINE_BIN=path/to/tapline bench/proxy.sh ...   measures that binary instead of building
#   TAPLINE_BEFORE=path/to/tapline bench/proxy.sh    adds rows for that binary (e.g. an older
#                                                    commit's), for before/after in one run
#
# Every path takes its turn in each of ROUNDS rounds (so a slow spell of the machine hits them
# all) and each cell is the median of its rounds; the rounds are printed too.
#
# Loopback only; installs nothing; every process it starts is stopped by PID on exit.
set -euo pipefail

secs="${1:-10}"
rounds="${2:-3}"
conns=50
. "$(dirname "$0")/lib.sh"
bench_init proxy
require wrk iperf3 nginx python3 cargo
bench_build

origin=$(free_port); nginx_proxy=$(free_port); forward=$(free_port); mapping=$(free_port)
lua_forward=$(free_port)
iperf=$(free_port); tcp_map=$(free_port); grpc_forward=$(free_port); plugin=$(free_port)
haproxy_port=$(free_port); socat_port=$(free_port)

# The origin: one worker answering a small fixed body.
nginx_conf origin 1 "server { listen 127.0.0.1:$origin; location / { return 200 \"hello from the origin\\n\"; } }"
# nginx as a reverse proxy: as many workers as tapline has runtime threads (one per core).
nginx_conf reverse "$(nproc)" "upstream origin { server 127.0.0.1:$origin; keepalive 128; }
    server { listen 127.0.0.1:$nginx_proxy; location / { proxy_pass http://origin;
        proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -c "$work/origin/nginx.conf" -p "$work/origin" & pids+=($!)
nginx -c "$work/reverse/nginx.conf" -p "$work/reverse" & pids+=($!)
iperf3 -s -p "$iperf" >/dev/null 2>&1 & pids+=($!)
# TCP relay peers, when installed (scripts/install-deps.sh bench): HAProxy as a plain TCP
# relay with splice(2) on, one thread per core like tapline; socat as the simplest relay.
tcp_peers=()
if command -v haproxy >/dev/null; then
    cat >"$work/haproxy.cfg" <<CFG
global
    nbthread $(nproc)
    maxconn 1000
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen relay
    bind 127.0.0.1:$haproxy_port
    server iperf 127.0.0.1:$iperf
CFG
    haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & pids+=($!)
    wait_port "$haproxy_port"
    tcp_peers+=("haproxy (mode tcp, splice):$haproxy_port")
fi
if command -v socat >/dev/null; then
    socat "TCP-LISTEN:$socat_port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$iperf" \
        2>"$work/socat.log" & pids+=($!)
    wait_port "$socat_port"
    tcp_peers+=("socat:$socat_port")
fi

"$tapline" proxy --quiet --proxy-address "127.0.0.1:$forward" \
    --proxy "$mapping=http://127.0.0.1:$origin" --proxy "$tcp_map=tcp://127.0.0.1:$iperf" \
    2>"$work/tapline.err" & pids+=($!)
# A Lua plugin that edits both messages: one request header, one response header.
cat >"$work/set_headers.lua" <<'LUA'
local p = { name = "set-headers" }
function p.on_request(req) req.headers:set("X-Tapline", "request") end
function p.on_response(resp) resp.headers:set("X-Tapline", "response") end
return p
LUA
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$lua_forward" \
    --plugin "$work/set_headers.lua" 2>"$work/lua.err" & pids+=($!)
wait_port "$origin"; wait_port "$nginx_proxy"; wait_port "$iperf"
wait_port "$forward"; wait_port "$mapping"; wait_port "$tcp_map"; wait_port "$lua_forward"
if [ -n "${TAPLINE_BEFORE:-}" ]; then
    before_forward=$(free_port); before_lua=$(free_port)
    "$TAPLINE_BEFORE" proxy --quiet --proxy-address "127.0.0.1:$before_forward" \
        2>"$work/before.err" & pids+=($!)
    "$TAPLINE_BEFORE" proxy --quiet --proxy-address "127.0.0.1:$before_lua" \
        --plugin "$work/set_headers.lua" 2>"$work/before-lua.err" & pids+=($!)
    wait_port "$before_forward"; wait_port "$before_lua"
fi

with_grpc=no
if python3 -c 'import grpc, grpc_tools' 2>/dev/null && [ -f "$root/tests/grpc_plugins/noop_plugin.py" ]; then
    python3 -m grpc_tools.protoc -I "$root/crates/tapline-grpc/proto" \
        --python_out="$work" --grpc_python_out="$work" "$root/crates/tapline-grpc/proto/plugin.proto"
    cp "$root/tests/grpc_plugins/plugin_common.py" "$root/tests/grpc_plugins/noop_plugin.py" "$work/"
    (cd "$work" && exec python3 noop_plugin.py "$plugin" >/dev/null 2>&1) & pids+=($!)
    wait_port "$plugin"
    "$tapline" proxy --quiet --proxy-address "127.0.0.1:$grpc_forward" \
        --grpc-plugin "http://127.0.0.1:$plugin" 2>"$work/grpc.err" & pids+=($!)
    wait_port "$grpc_forward"
    with_grpc=yes
fi

# mitmproxy as the peer forward proxy, when installed (scripts/install-deps.sh bench puts it
# in a venv; MITMDUMP=path overrides).
mitmdump_bin=${MITMDUMP:-$(command -v mitmdump || ls /opt/tapline-bench-venv/bin/mitmdump 2>/dev/null || true)}
if [ -n "$mitmdump_bin" ]; then
    mitm=$(free_port)
    "$mitmdump_bin" --mode regular --listen-host 127.0.0.1 --listen-port "$mitm" -q \
        >"$work/mitm.log" 2>&1 & pids+=($!)
    wait_port "$mitm"
fi

# wrk speaks to the forward proxy; the script makes each request line absolute-form.
cat >"$work/forward.lua" <<LUA
wrk.path = "http://127.0.0.1:$origin/"
wrk.headers["Host"] = "127.0.0.1:$origin"
LUA

# http URL [wrk args...] -> "requests/s p50_ms p99_ms"
http() { wrk_stats "$@"; }

# throughput PORT [-R] -> Gbit/s received
throughput() {
    timeout $((secs + 30)) iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -J "${@:2}" |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
added() { python3 -c "print('%+.3f' % ($1 - $2))"; }

echo "tapline proxy bench: ${secs}s per run, $(nproc) cores, wrk -t2 -c$conns, $(date -u +%FT%TZ), load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "## TCP relay throughput (iperf3, one stream, Gbit/s received, median of $rounds rounds; ratio = relayed / direct)"
# The paths take turns within each round, so a slow spell of the machine hits all of them;
# each cell is the median of its rounds.
tcp_paths=("direct:$iperf" "tapline tcp mapping:$tcp_map" "${tcp_peers[@]}")
declare -A runs
for ((r = 0; r < rounds; r++)); do
    for path in "${tcp_paths[@]}"; do
        runs["${path%:*}/up"]+=" $(throughput "${path##*:}")"
        runs["${path%:*}/down"]+=" $(throughput "${path##*:}" -R)"
    done
done
median() { python3 -c 'import statistics,sys; print("%.2f" % statistics.median(map(float, sys.argv[1:])))' $1; }
direct_up=$(median "${runs[direct/up]}"); direct_down=$(median "${runs[direct/down]}")
printf '%-30s %10s %7s %10s %7s   %s\n' "path" "c -> s" "ratio" "s -> c" "ratio" "rounds (c -> s | s -> c)"
for path in "${tcp_paths[@]}"; do
    name=${path%:*}
    up=$(median "${runs[$name/up]}"); down=$(median "${runs[$name/down]}")
    printf '%-30s %10s %7s %10s %7s  %s |%s\n' "$name" "$up" "$(ratio "$up" "$direct_up")" \
        "$down" "$(ratio "$down" "$direct_down")" "${runs[$name/up]}" "${runs[$name/down]}"
done
[ ${#tcp_peers[@]} -gt 0 ] || echo "(no haproxy or socat: the TCP peer rows are skipped; scripts/install-deps.sh bench installs them)"
echo
echo "## HTTP through proxies (wrk, $conns connections, small response; median of $rounds rounds)"
# name|url|wrk args: every path takes its turn in each round.
http_paths=(
    "direct to origin|http://127.0.0.1:$origin/|"
    "nginx reverse proxy|http://127.0.0.1:$nginx_proxy/|"
    "tapline forward proxy|http://127.0.0.1:$forward/|-s $work/forward.lua"
    "tapline http mapping|http://127.0.0.1:$mapping/|"
    "tapline forward + Lua set 2 headers|http://127.0.0.1:$lua_forward/|-s $work/forward.lua"
)
if [ -n "${TAPLINE_BEFORE:-}" ]; then
    http_paths+=("before: forward proxy|http://127.0.0.1:$before_forward/|-s $work/forward.lua"
                 "before: forward + Lua set 2 headers|http://127.0.0.1:$before_lua/|-s $work/forward.lua")
fi
[ -n "$mitmdump_bin" ] && http_paths+=("mitmproxy forward proxy (mitmdump)|http://127.0.0.1:$mitm/|-s $work/forward.lua")
[ "$with_grpc" = yes ] && http_paths+=("tapline forward + no-op gRPC|http://127.0.0.1:$grpc_forward/|-s $work/forward.lua")
declare -A rps p50 p99
for ((r = 0; r < rounds; r++)); do
    for path in "${http_paths[@]}"; do
        IFS='|' read -r name url args <<<"$path"
        # shellcheck disable=SC2086
        read -r a b c <<<"$(http "$url" $args)"
        rps[$name]+=" $a"; p50[$name]+=" $b"; p99[$name]+=" $c"
    done
done
n_rps=$(median "${rps[nginx reverse proxy]}"); n_p99=$(median "${p99[nginx reverse proxy]}")
d_p99=$(median "${p99[direct to origin]}")
printf '%-38s %10s %9s %9s %10s %12s %12s   %s\n' "path" "req/s" "p50 ms" "p99 ms" "vs nginx" \
    "p99 added" "p99 - nginx" "rounds (req/s)"
for path in "${http_paths[@]}"; do
    name=${path%%|*}
    r_=$(median "${rps[$name]}"); a=$(median "${p50[$name]}"); b=$(median "${p99[$name]}")
    printf '%-38s %10s %9s %9s %10s %12s %12s  %s\n' "$name" "$r_" "$a" "$b" \
        "$(ratio "$r_" "$n_rps")" "$(added "$b" "$d_p99")" "$(added "$b" "$n_p99")" "${rps[$name]}"
done
[ -n "$mitmdump_bin" ] || echo "(no mitmdump: the mitmproxy row is skipped; scripts/install-deps.sh bench installs it)"
[ "$with_grpc" = yes ] || echo "(no python3 grpcio/grpcio-tools: the gRPC plugin row is skipped)"
if grep -q "call failed" "$work/grpc.err" 2>/dev/null; then
    echo "bench/proxy.sh: plugin calls failed during the run; the gRPC row is not valid" >&2
fi
if grep -q "lua plugin" "$work/lua.err"; then
    echo "bench/proxy.sh: Lua plugin errors during the run; its row is not valid" >&2
fi
echo
echo "targets: tcp mapping >= 0.90x direct; forward proxy >= 1.0x nginx, with the Lua header plugin"
echo "         >= 0.9x nginx; forward proxy p99 within 0.5 ms of nginx's"
