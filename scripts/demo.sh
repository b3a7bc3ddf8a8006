#!/usr/bin/env bash
# tapline's main job on bundled data, start to finish on its own:
#  1. passive: model the HTTP and PostgreSQL traffic in samples/sample.pcap (recorded by
#     scripts/record-sample.sh), with riff's "which scanner input?" plugin and a SQL logger;
#  2. active: the demo origin behind the intercepting proxy, with a Lua plugin that adds a
#     header, a 50 ms latency fault, and the slow-HTTP plugin that also ran on the capture
#     (one plugin, both modes), a few requests through it, one of its JSON events (with the
#     flow's UUID), then a clean stop.
# Installs libpcap and curl if missing, builds a release binary. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
echo "building tapline (release)…" >&2
bin=$(scripts/build-tapline.sh --release)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo
echo "== 1. tapline capture -r samples/sample.pcap --plugin ua_watch.lua --plugin http_stats.lua --plugin slow_http.lua"
"$bin" capture -r samples/sample.pcap \
  --plugin examples/plugins/ua_watch.lua --plugin-arg ua-watch.word=pcap \
  --plugin examples/plugins/http_stats.lua \
  --plugin examples/plugins/slow_http.lua --plugin-arg slow-http.ms=40

echo
echo "== 2. tapline proxy in front of tapline demo, with add_header.lua, slow_http.lua and a 50 ms latency fault"
origin=127.0.0.1:$(free_port)
proxy=127.0.0.1:$(free_port)
events=$(mktemp)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "$events"' EXIT
"$bin" demo --address "$origin" 2>/dev/null & pids+=($!)
"$bin" proxy --proxy-address "$proxy" --duration 30s --output "$events" \
  --plugin examples/plugins/add_header.lua \
  --plugin examples/plugins/slow_http.lua --plugin-arg slow-http.ms=40 \
  --with-latency --latency-mean 50 & proxy_pid=$!; pids+=($proxy_pid)
for _ in $(seq 50); do curl -s -o /dev/null "http://$proxy" && break; sleep 0.1; done
echo "-- the origin's /echo, as seen through the proxy (note the header the plugin added):"
curl -s -x "http://$proxy" "http://$origin/echo"
curl -s -x "http://$proxy" "http://$origin/status/503" -o /dev/null
curl -s -x "http://$proxy" -d 'hello=world' "http://$origin/echo" -o /dev/null
curl -s -x "http://$proxy" "http://$origin/bytes/100000" -o /dev/null \
  -w "-- 100000 bytes through the proxy in %{time_total} s (the 50 ms latency fault included)\n"
sleep 0.3
kill -TERM "$proxy_pid"; wait "$proxy_pid" || true
echo "-- one of the proxy's JSON events (--output): the POST's transaction, with the flow's UUID"
grep '"kind":"transaction"' "$events" | grep '"method":"POST"' | head -1
echo
echo "done: see README.md for capture on a live interface, gRPC plugins and JSON/syslog outputs."
