#!/usr/bin/env bash
# Lua plugin overhead, side by side in one run:
#   1. forward proxy to `tapline demo`: requests/s with no plugin, a no-op on_request, an
#      on_request reading headers, and a plugin setting one request and one response header
#      (wrk, 16 connections, and 1 connection for added latency);
#   2. a tcp mapping proxy to iperf3: throughput with no plugin and with a no-op on_data
#      (target: at least 0.7x of no plugin), next to a direct connection;
#   3. capture mode: `tapline capture -r` over an HTTP capture the proxy itself recorded
#      (-w), with no plugin, a no-op on_request and a header-reading one: requests/s and the
#      time added per hook call;
#   4. the in-process cost of one hook call (crates/tapline-lua/tests/hook_cost.rs).
#
#   bench/lua.sh [SECONDS_PER_RUN]     (default 10; needs wrk, iperf3, python3, cargo)
#
# Loopback only; installs nothing; every process it starts is stopped by PID on exit.
set -euo pipefail

secs="${1:-10}"
conns=16
runs=3
. "$(dirname "$0")/lib.sh"
bench_init lua
require wrk iperf3 python3 cargo
bench_build

# The plugins measured.
cat >"$work/noop_request.lua" <<'LUA'
return { name = "noop-request", on_request = function(req, flow) end }
LUA
cat >"$work/read_headers.lua" <<'LUA'
local p = { name = "read-headers" }
function p.on_request(req, flow)
    local ua = req.headers:get("User-Agent")
    local host = req.headers:get("Host")
    if ua and ua:find("never-there", 1, true) then tap.alert("odd", { host = host }) end
end
return p
LUA
cat >"$work/set_headers.lua" <<'LUA'
local p = { name = "set-headers" }
function p.on_request(req) req.headers:set("X-Tapline", "request") end
function p.on_response(resp) resp.headers:set("X-Tapline", "response") end
return p
LUA
cat >"$work/noop_data.lua" <<'LUA'
return { name = "noop-data", on_data = function(chunk, flow) end }
LUA

echo "Lua plugin overhead, ${secs}s per run, $(nproc) cores"

# --- 1. forward proxy ---------------------------------------------------------------------
demo_port=$(free_port); bare_port=$(free_port); noop_port=$(free_port); read_port=$(free_port)
set_port=$(free_port)
"$tapline" demo --address "127.0.0.1:$demo_port" 2>/dev/null & pids+=($!)
wait_port "$demo_port"
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$bare_port" 2>"$work/bare.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$noop_port" \
    --plugin "$work/noop_request.lua" 2>"$work/noop.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$read_port" \
    --plugin "$work/read_headers.lua" 2>"$work/read.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$set_port" \
    --plugin "$work/set_headers.lua" 2>"$work/set.err" & pids+=($!)
wait_port "$bare_port"; wait_port "$noop_port"; wait_port "$read_port"; wait_port "$set_port"

cat >"$work/proxy.lua" <<LUA
wrk.path = "http://127.0.0.1:$demo_port/"
wrk.headers["Host"] = "127.0.0.1:$demo_port"
LUA
rps() {
    local threads=$1 c=$2 url=$3; shift 3
    timeout $((secs + 30)) wrk -t"$threads" -c"$c" -d"${secs}s" "$@" "$url" |
        awk '/Requests\/sec/ {print $2}'
}
direct=$(rps 2 $conns "http://127.0.0.1:$demo_port/")
bare=$(rps 2 $conns "http://127.0.0.1:$bare_port/" -s "$work/proxy.lua")
noop=$(rps 2 $conns "http://127.0.0.1:$noop_port/" -s "$work/proxy.lua")
read=$(rps 2 $conns "http://127.0.0.1:$read_port/" -s "$work/proxy.lua")
set=$(rps 2 $conns "http://127.0.0.1:$set_port/" -s "$work/proxy.lua")
bare1=$(rps 1 1 "http://127.0.0.1:$bare_port/" -s "$work/proxy.lua")
noop1=$(rps 1 1 "http://127.0.0.1:$noop_port/" -s "$work/proxy.lua")
read1=$(rps 1 1 "http://127.0.0.1:$read_port/" -s "$work/proxy.lua")
set1=$(rps 1 1 "http://127.0.0.1:$set_port/" -s "$work/proxy.lua")
if grep -q "lua plugin" "$work"/*.err; then
    echo "bench/lua.sh: plugin errors during the run; numbers are not valid:" >&2
    grep -h "lua plugin" "$work"/*.err | head -3 >&2
    exit 1
fi

# --- 2. tcp mapping throughput --------------------------------------------------------------
iperf_port=$(free_port); map_bare=$(free_port); map_lua=$(free_port)
iperf3 -s -p "$iperf_port" >/dev/null 2>&1 & pids+=($!)
wait_port "$iperf_port"
"$tapline" proxy --quiet --disable-http-proxy --proxy "$map_bare=tcp://127.0.0.1:$iperf_port" \
    2>/dev/null & pids+=($!)
"$tapline" proxy --quiet --disable-http-proxy --proxy "$map_lua=tcp://127.0.0.1:$iperf_port" \
    --plugin "$work/noop_data.lua" 2>"$work/map.err" & pids+=($!)
wait_port "$map_bare"; wait_port "$map_lua"
gbps() {
    timeout $((secs + 30)) iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -J |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9)'
}
tcp_direct=$(gbps "$iperf_port")
tcp_bare=$(gbps "$map_bare")
tcp_lua=$(gbps "$map_lua")

# --- 3. capture mode over a recorded HTTP capture --------------------------------------------
rec_port=$(free_port)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$rec_port" -w "$work/http.pcap" \
    2>/dev/null & rec_pid=$!; pids+=($rec_pid)
wait_port "$rec_port"
timeout 60 wrk -t2 -c8 -d3s -s "$work/proxy.lua" "http://127.0.0.1:$rec_port/" >/dev/null
kill -TERM "$rec_pid"; wait "$rec_pid" 2>/dev/null || true
requests=$("$tapline" capture --quiet -r "$work/http.pcap" 2>&1 |
    sed -n 's/.* http_request \([0-9]*\).*/\1/p' | head -1)
[[ -n "$requests" && "$requests" -gt 0 ]] || { echo "bench/lua.sh: the recorded capture has no requests" >&2; exit 1; }
best_time() {
    local best=""
    for _ in $(seq 1 $runs); do
        local t0 t1
        t0=$(date +%s.%N)
        "$tapline" capture --quiet -r "$work/http.pcap" "$@" 2>/dev/null
        t1=$(date +%s.%N)
        best=$(python3 -c "t=$t1-$t0; b='$best'; print(t if not b or t < float(b) else b)")
    done
    echo "$best"
}
cap_bare=$(best_time)
cap_noop=$(best_time --plugin "$work/noop_request.lua")
cap_read=$(best_time --plugin "$work/read_headers.lua")

python3 - "$direct" "$bare" "$noop" "$read" "$bare1" "$noop1" "$read1" "$conns" \
    "$tcp_direct" "$tcp_bare" "$tcp_lua" "$requests" "$cap_bare" "$cap_noop" "$cap_read" \
    "$set" "$set1" <<'PY'
import sys
a = sys.argv[1:]
direct, bare, noop, read, bare1, noop1, read1 = map(float, a[0:7])
conns = a[7]
tcp_direct, tcp_bare, tcp_lua = map(float, a[8:11])
requests = int(a[11])
cap_bare, cap_noop, cap_read = map(float, a[12:15])
set_, set1 = map(float, a[15:17])

print(f"\n1. forward proxy to tapline demo's /")
print(f"{'run':52} {'requests/s':>11} {'vs proxy':>9}")
print(f"{'direct to demo (' + conns + ' connections)':52} {direct:11.0f}")
for name, v in [("proxy, no plugin", bare), ("proxy + no-op on_request", noop),
                ("proxy + on_request reading 2 headers", read),
                ("proxy + setting a request and a response header", set_)]:
    print(f"{name + ' (' + conns + ' conn.)':52} {v:11.0f} {v / bare:9.2f}")
for name, v in [("proxy, no plugin", bare1), ("proxy + no-op on_request", noop1),
                ("proxy + on_request reading 2 headers", read1),
                ("proxy + setting a request and a response header", set1)]:
    print(f"{name + ' (1 conn.)':52} {v:11.0f} {v / bare1:9.2f}")
print(f"added latency per request (1 conn.): no-op {(1/noop1 - 1/bare1) * 1e6:.1f} us, "
      f"reading headers {(1/read1 - 1/bare1) * 1e6:.1f} us, "
      f"setting 2 headers {(1/set1 - 1/bare1) * 1e6:.1f} us")

print(f"\n2. tcp mapping to iperf3")
print(f"{'run':52} {'Gbit/s':>11} {'vs proxy':>9}")
print(f"{'direct to iperf3':52} {tcp_direct:11.2f}")
print(f"{'tcp mapping, no plugin':52} {tcp_bare:11.2f} {1:9.2f}")
print(f"{'tcp mapping + no-op on_data':52} {tcp_lua:11.2f} {tcp_lua / tcp_bare:9.2f}   (target >= 0.70)")

print(f"\n3. tapline capture -r over a recorded capture of {requests} HTTP requests (best of 3)")
print(f"{'run':52} {'requests/s':>11} {'vs bare':>9}")
for name, t in [("capture, no plugin", cap_bare), ("capture + no-op on_request", cap_noop),
                ("capture + on_request reading 2 headers", cap_read)]:
    print(f"{name:52} {requests / t:11.0f} {cap_bare / t:9.2f}")
print(f"time added per on_request call: no-op {(cap_noop - cap_bare) / requests * 1e6:.2f} us, "
      f"reading headers {(cap_read - cap_bare) / requests * 1e6:.2f} us (target <= 2 us)")
PY

echo
echo "4. in process (cargo test --release -p tapline-lua --test hook_cost -- --ignored)"
(cd "$root" && cargo test --release --quiet -p tapline-lua --test hook_cost -- --ignored --nocapture 2>/dev/null |
    grep "ns per call")
