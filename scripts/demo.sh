#!/usr/bin/env bash
# tapline's main job on bundled data, start to finish on its own:
#  1. passive: model the HTTP and PostgreSQL traffic in samples/sample.pcap (recorded by
#     scripts/record-sample.sh), with riff's "which scanner input?" plugin and a SQL logger;
#     The same capture again as a mirror port would deliver it: every frame inside VXLAN,
#     every outer datagram cut in two IP fragments: the same events come out;
#  2. active: the demo origin behind the intercepting proxy, with a Lua plugin that adds a
#     header, a 50 ms latency fault, an HTTP 503 aimed at one route (POST /echo), and the
#     slow-HTTP plugin that also ran on the capture (one plugin, both modes), a few requests
#     through it, what its live web view (--web) holds, the sample's HTTP replayed through it
#     (the aimed fault and the plugin's header are the differences), one of its JSON events (with the flow's UUID),
#     then a clean stop;
#  3. TLS interception: an HTTPS origin (openssl s_server, its certificate from a CA made here)
#     behind the proxy with --intercept-tls, curl trusting tapline's own CA (made in a temp
#     dir): the same plugin sees the decrypted request, and the JSON shows the flow's TLS;
#  4. where PostgreSQL is installed (scripts/install-deps.sh test): a throwaway cluster behind
#     a psql mapping with a SQL error aimed at one statement; psql runs a transaction, the
#     aimed UPDATE fails with 40001 and the server never sees it.
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
echo "== 1b. the same capture inside VXLAN, each outer datagram in two IP fragments (as a mirror port may send it)"
mirror=$(mktemp)
python3 - samples/sample.pcap "$mirror" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
out = open(sys.argv[2], "wb")
out.write(data[:24])
eth = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0])
def ipv4(ident, flags_offset, payload):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_offset, 64, 17, 0,
                       bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + payload
at, ident = 24, 1
while at + 16 <= len(data):
    secs, micros, incl, _ = struct.unpack("<IIII", data[at:at + 16])
    frame = data[at + 16:at + 16 + incl]
    at += 16 + incl
    vxlan = bytes([8, 0, 0, 0, 0, 0, 42, 0]) + frame
    udp = struct.pack("!HHHH", 40000, 4789, 8 + len(vxlan), 0) + vxlan
    cut = (len(udp) // 2) & ~7
    for piece in (ipv4(ident, 0x2000, udp[:cut]), ipv4(ident, cut // 8, udp[cut:])):
        wrapped = eth + piece
        out.write(struct.pack("<IIII", secs, micros, len(wrapped), len(wrapped)) + wrapped)
    ident += 1
PY
"$bin" capture -r "$mirror" --quiet 2>&1 | sed 's/; limit drops.*; IP fragments/; IP fragments/'
rm -f "$mirror"

echo
echo "== 2. tapline proxy in front of tapline demo, with add_header.lua, slow_http.lua, a 50 ms latency fault and a 503 aimed at POST /echo"
origin=127.0.0.1:$(free_port)
proxy=127.0.0.1:$(free_port)
web=127.0.0.1:$(free_port)
events=$(mktemp)
pids=()
tls_dir=$(mktemp -d)
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$events" "$tls_dir"' EXIT
"$bin" demo --address "$origin" 2>/dev/null & pids+=($!)
"$bin" proxy --proxy-address "$proxy" --duration 30s --output "$events" \
  --plugin examples/plugins/add_header.lua \
  --plugin examples/plugins/slow_http.lua --plugin-arg slow-http.ms=40 \
  --with-latency --latency-mean 50 \
  --with-http-response --http-response-status 503 --http-response-match '^POST /echo' \
  --web "$web" & proxy_pid=$!; pids+=($proxy_pid)
for _ in $(seq 50); do curl -s -o /dev/null "http://$proxy" && break; sleep 0.1; done
echo "-- the origin's /echo, as seen through the proxy (note the header the plugin added):"
curl -s -x "http://$proxy" "http://$origin/echo"
curl -s -x "http://$proxy" "http://$origin/status/503" -o /dev/null
curl -s -x "http://$proxy" -d 'hello=world' "http://$origin/echo" -o /dev/null \
  -w "-- POST /echo: %{http_code} (the fault aimed at that route); "
curl -s -x "http://$proxy" "http://$origin/echo?again" -o /dev/null -w "GET /echo: %{http_code}\n"
curl -s -x "http://$proxy" "http://$origin/bytes/100000" -o /dev/null \
  -w "-- 100000 bytes through the proxy in %{time_total} s (the 50 ms latency fault included)\n"
sleep 0.3
echo "-- its live web view (--web) at http://$web/ holds:"
curl -s "http://$web/api/rows" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["rows"]:
    if r["kind"] == "transaction":
        q, a = r["request"], r["response"]
        print("   ", r["ts"][11:23], q["method"], q["url"] or q["path"], a["status"], "%.1f ms" % r["latency_ms"])'
echo "-- the sample capture's HTTP replayed into this origin through this proxy (tapline replay --via): the aimed 503 and the header the plugin adds (which /echo reflects) are the differences"
"$bin" replay -r samples/sample.pcap -f 'tcp port 8080' --to "http=$origin" --via "http://$proxy" \
  --speed max 2>/dev/null | grep -E '^(replay|DIFFERENT)' | sed 's/^/   /'
kill -TERM "$proxy_pid"; wait "$proxy_pid" || true
echo "-- one of the proxy's JSON events (--output): the POST's transaction, with the flow's UUID"
grep '"kind":"transaction"' "$events" | grep '"method":"POST"' | head -1
: > "$events"

echo
echo "== 3. TLS interception: curl -> tapline proxy --intercept-tls -> an HTTPS origin (openssl s_server)"
(
  cd "$tls_dir"
  ossl() { openssl "$@" >/dev/null 2>&1; }
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=demo origin CA" -keyout ca.key -out ca.pem
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout origin.key -out origin.csr
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > ext.cnf
  ossl x509 -req -in origin.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out origin.pem
  mkdir www && echo "hello over TLS" > www/hello.txt
)
https_port=$(free_port)
(cd "$tls_dir/www" && exec openssl s_server -quiet -WWW -accept "$https_port" -cert ../origin.pem -key ../origin.key) \
  >/dev/null 2>&1 & pids+=($!)
proxy=127.0.0.1:$(free_port)
"$bin" proxy --proxy-address "$proxy" --duration 30s --output "$events" --intercept-tls \
  --ca-dir "$tls_dir/tapline-ca" --upstream-ca "$tls_dir/ca.pem" \
  --plugin examples/plugins/add_header.lua & proxy_pid=$!; pids+=($proxy_pid)
for _ in $(seq 50); do curl -s -o /dev/null "http://$proxy" && break; sleep 0.1; done
echo "-- https://localhost:$https_port/hello.txt through the proxy, curl trusting tapline's CA:"
curl -s --retry 5 --retry-connrefused --cacert "$tls_dir/tapline-ca/tapline-ca.pem" -x "http://$proxy" \
  "https://localhost:$https_port/hello.txt"
sleep 0.3
kill -TERM "$proxy_pid"; wait "$proxy_pid" || true
echo "-- the decrypted request's JSON event: an https URL, the header the plugin added, the flow's TLS"
grep '"kind":"http_request"' "$events" | grep '"url":"https' | head -1

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$pg_bin" ] && [ "$(id -u)" = 0 ] && command -v psql >/dev/null; then
  echo
  echo "== 4. a SQL fault aimed at one statement: psql -> tapline psql mapping (--with-sql-error) -> PostgreSQL"
  pg_dir=$(mktemp -d); chown postgres "$pg_dir"
  pg_port=$(free_port); map_port=$(free_port)
  runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres --no-sync >/dev/null
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c fsync=off -c log_statement=all" start >/dev/null
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$events" "$events.err" "$tls_dir" "$pg_dir"' EXIT
  "$bin" proxy --disable-http-proxy --proxy "$map_port=psql://127.0.0.1:$pg_port" --duration 30s \
    --output "$events" --with-sql-error --sql-error-code 40001 \
    --sql-error-message 'could not serialize access (rehearsed by tapline)' \
    --sql-error-match '^\s*update\s+orders' 2> >(tee "$events.err" >&2) & proxy_pid=$!; pids+=($proxy_pid)
  for _ in $(seq 50); do grep -q "mapping 127.0.0.1:$map_port" "$events.err" 2>/dev/null && break; sleep 0.1; done
  PGSSLMODE=disable psql -X -h 127.0.0.1 -p "$map_port" -U postgres -d postgres \
    -c "create table orders (id int, state text)" -c "insert into orders values (1, 'new')" \
    -c "begin" -c "update orders set state = 'paid' where id = 1" -c "select 1" -c "rollback" \
    -c "select id, state from orders" 2>&1 || true
  sleep 0.3
  kill -TERM "$proxy_pid"; wait "$proxy_pid" || true
  echo "-- the server's log never shows the UPDATE (only tapline's stand-in):"
  echo "   UPDATE statements the server saw: $(grep -c 'update orders' "$pg_dir/log" || true)"
  echo "-- the statement's JSON transaction says the failure was rehearsed:"
  grep '"injected":"sql-error"' "$events" | head -1
fi

echo
echo "done: see README.md for capture on a live interface, gRPC plugins, JSON/syslog outputs and docs/tls.md."
