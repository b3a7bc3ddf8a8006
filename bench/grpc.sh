#!/usr/bin/env bash
# gRPC plugin overhead: forward-proxy requests/s to `tapline demo` with and without a no-op
# Python gRPC plugin (tests/grpc_plugins/noop_plugin.py), next to a direct connection and a
# no-op Lua plugin (what the proxy costs when any plugin sees HTTP), and the per-call overhead
# derived from one-connection (sequential) runs; then the chunk path: iperf3 MB/s through a
# `tcp` mapping with the same plugin passing every chunk through, beside a plain mapping, with
# one flow and with four at once.
#
#   bench/grpc.sh [SECONDS_PER_RUN]     (default 10; needs wrk, python3 grpcio + grpcio-tools)
#
# Loopback only; installs nothing; every process it starts is stopped by PID on exit.
set -euo pipefail

secs="${1:-10}"
conns=16
. "$(dirname "$0")/lib.sh"
bench_init grpc
require wrk python3 cargo iperf3
python3 -c 'import grpc, grpc_tools' 2>/dev/null || bench_fail "python3 grpcio and grpcio-tools are required"
bench_build

# The plugin and its stubs.
python3 -m grpc_tools.protoc -I "$root/crates/tapline-grpc/proto" \
    --python_out="$work" --grpc_python_out="$work" "$root/crates/tapline-grpc/proto/plugin.proto"
cp "$root/tests/grpc_plugins/plugin_common.py" "$root/tests/grpc_plugins/noop_plugin.py" "$work/"

cat >"$work/noop.lua" <<'LUA'
local p = { name = "noop", version = "1" }
function p.on_request(req, flow) end
function p.on_response(resp, flow) end
return p
LUA

demo_port=$(free_port); plugin_port=$(free_port); bare_port=$(free_port); grpc_port=$(free_port)
lua_port=$(free_port)
"$tapline" demo --address "127.0.0.1:$demo_port" 2>/dev/null & pids+=($!)
(cd "$work" && exec python3 noop_plugin.py "$plugin_port" >/dev/null 2>&1) & pids+=($!)
wait_port "$demo_port"; wait_port "$plugin_port"
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$bare_port" 2>"$work/bare.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$grpc_port" \
    --grpc-plugin "http://127.0.0.1:$plugin_port" 2>"$work/grpc.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$lua_port" --plugin "$work/noop.lua" \
    2>"$work/lua.err" & pids+=($!)
wait_port "$bare_port"; wait_port "$grpc_port"; wait_port "$lua_port"

# wrk speaks to the proxy; the script makes each request line absolute-form, as to a proxy.
cat >"$work/proxy.lua" <<LUA
wrk.path = "http://127.0.0.1:$demo_port/"
wrk.headers["Host"] = "127.0.0.1:$demo_port"
LUA

# rps THREADS CONNS URL [wrk args...] -> requests per second
rps() {
    local threads=$1 c=$2 url=$3; shift 3
    timeout $((secs + 30)) wrk -t"$threads" -c"$c" -d"${secs}s" "$@" "$url" |
        awk '/Requests\/sec/ {print $2}'
}

echo "gRPC plugin overhead, forward proxy to tapline demo's /, ${secs}s per run, $(nproc) cores"
direct=$(rps 2 $conns "http://127.0.0.1:$demo_port/")
bare=$(rps 2 $conns "http://127.0.0.1:$bare_port/" -s "$work/proxy.lua")
lua=$(rps 2 $conns "http://127.0.0.1:$lua_port/" -s "$work/proxy.lua")
grpc=$(rps 2 $conns "http://127.0.0.1:$grpc_port/" -s "$work/proxy.lua")
bare1=$(rps 1 1 "http://127.0.0.1:$bare_port/" -s "$work/proxy.lua")
lua1=$(rps 1 1 "http://127.0.0.1:$lua_port/" -s "$work/proxy.lua")
grpc1=$(rps 1 1 "http://127.0.0.1:$grpc_port/" -s "$work/proxy.lua")

if grep -q "call failed" "$work/grpc.err"; then
    echo "bench/grpc.sh: plugin calls failed during the run; numbers are not valid:" >&2
    grep "call failed" "$work/grpc.err" | head -3 >&2
    exit 1
fi

python3 - "$direct" "$bare" "$lua" "$grpc" "$bare1" "$lua1" "$grpc1" "$conns" <<'PY'
import sys
direct, bare, lua, grpc, bare1, lua1, grpc1 = map(float, sys.argv[1:8])
conns = sys.argv[8]
print(f"{'run':50} {'requests/s':>11} {'vs direct':>10} {'vs proxy':>9}")
for name, v in [(f"direct to demo ({conns} connections)", direct),
                (f"proxy, no plugin ({conns} connections)", bare),
                (f"proxy + no-op Lua plugin ({conns} connections)", lua),
                (f"proxy + no-op gRPC plugin ({conns} connections)", grpc)]:
    print(f"{name:50} {v:11.0f} {v / direct:10.2f} {v / bare:9.2f}")
for name, v in [("proxy, no plugin (1 connection)", bare1),
                ("proxy + no-op Lua plugin (1 connection)", lua1),
                ("proxy + no-op gRPC plugin (1 connection)", grpc1)]:
    print(f"{name:50} {v:11.0f} {'':10} {v / bare1:9.2f}")
added_ms = (1 / grpc1 - 1 / lua1) * 1000
print(f"gRPC vs Lua, sequential: +{added_ms:.3f} ms per request for its 2 calls "
      f"(ProcessHttpRequest + ProcessHttpResponse), {added_ms / 2:.3f} ms per call")
PY

# --- The chunk path: a pass-through plugin on a tcp mapping ---------------------------------
sink=$(free_port); plain_map=$(free_port); grpc_map=$(free_port)
iperf3 -s -p "$sink" >/dev/null 2>&1 & pids+=($!)
"$tapline" proxy --quiet --disable-http-proxy --proxy "$plain_map=tcp://127.0.0.1:$sink" \
    2>"$work/plain_map.err" & pids+=($!)
"$tapline" proxy --quiet --disable-http-proxy --proxy "$grpc_map=tcp://127.0.0.1:$sink" \
    --grpc-plugin "http://127.0.0.1:$plugin_port" 2>"$work/grpc_map.err" & pids+=($!)
wait_port "$plain_map"; wait_port "$grpc_map"
sleep 0.5
# mbps PORT STREAMS -> MB/s received
mbps() {
    timeout $((secs + 30)) iperf3 -c 127.0.0.1 -p "$1" -P "$2" -t "$secs" -J |
        python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))'
}
for streams in 1 4; do
    p=$(mbps "$plain_map" "$streams"); g=$(mbps "$grpc_map" "$streams")
    printf '%-50s %8s MB/s\n' "tcp mapping, no plugin ($streams flows)" "$p"
    printf '%-50s %8s MB/s %6s of the plain mapping\n' "tcp mapping + pass-through gRPC plugin ($streams flows)" "$g" \
        "$(python3 -c "print('%.2f' % ($g / $p))")"
done
if grep -q "call failed" "$work/grpc_map.err"; then
    echo "bench/grpc.sh: tunnel plugin calls failed during the run; numbers are not valid" >&2
    exit 1
fi
