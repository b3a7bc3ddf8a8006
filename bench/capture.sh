#!/usr/bin/env bash
# Capture speed and memory, side by side in one run:
#   1. records a large capture itself: tcpdump on lo while wrk fetches from an nginx origin
#      (HTTP keep-alive) and pgbench runs select-only transactions against a throwaway
#      PostgreSQL cluster, until PACKETS packets (bounded in time too);
#   2. reads it offline with tapline (decode + reassembly + HTTP/PostgreSQL decoding, no
#      plugins, --quiet; also with one worker, with every event built and written as JSON
#      to /dev/null, and with protocol decoding off),
#      `tshark -r F -q -z conv,tcp` and `tcpdump -r F -w /dev/null`, and prints packets/s
#      and ratios (best of 3 runs; tshark once, it is slow); then the same capture re-wrapped
#      in GRE and in VXLAN, read by tapline and tshark;
#   3. synthesises a pcap with 100,000 concurrent TCP flows (handshake, request, answer, no
#      FIN: every flow is open at the end) and reports tapline's peak RSS reading it.
#
# With --quiet nothing reads event details, so tapline leaves out what no one reads:
# PostgreSQL `message` events come without fields and raw bytes, HTTP `transaction` events
# without copies of both heads (HTTP messages are built whole; every event is still made and
# counted). The --json row builds and writes everything.
#
#   bench/capture.sh [PACKETS]    (default 1000000; needs root, tcpdump, tshark, wrk, nginx,
#                                  PostgreSQL 15 server binaries, pgbench, python3)
#
# Loopback only; installs nothing; every process it starts is stopped by PID on exit.
set -euo pipefail

packets="${1:-1000000}"
. "$(dirname "$0")/lib.sh"
bench_init capture
require_root "tcpdump on lo, a postgres cluster"
require tcpdump tshark wrk nginx pgbench python3 cargo runuser capinfos
bench_build

# --- 1. Record -------------------------------------------------------------------------
origin=$(free_port); pgport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
user root;
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server { listen 127.0.0.1:$origin; location / { return 200 "hello from the origin\\n"; } }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

start_postgres "$pgport"
wait_port "$origin"; wait_port "$pgport"
pgbench -h 127.0.0.1 -p "$pgport" -U postgres -i -s 1 -q postgres >/dev/null 2>&1

big="$work/big.pcap"
timeout 180 tcpdump -i lo -n -s 262144 -B 131072 -c "$packets" -w "$big" \
    "tcp port $origin or tcp port $pgport" 2>"$work/tcpdump.err" & tcpdump_pid=$!
pids+=($tcpdump_pid)
for _ in $(seq 1 200); do grep -q "listening on" "$work/tcpdump.err" && break; sleep 0.05; done
wrk -t1 -c16 -d170s "http://127.0.0.1:$origin/" >/dev/null 2>&1 & wrk_pid=$!; pids+=($wrk_pid)
pgbench -h 127.0.0.1 -p "$pgport" -U postgres -S -c 4 -j 1 -T 170 postgres >/dev/null 2>&1 & pgb_pid=$!
pids+=($pgb_pid)
wait "$tcpdump_pid" || true
kill "$wrk_pid" "$pgb_pid" 2>/dev/null || true
recorded=$(capinfos -c -M "$big" | awk -F: '/Number of packets/ {gsub(/ /, "", $2); print $2}')
size=$(stat -c %s "$big")
echo "recorded $recorded packets ($((size / 1024 / 1024)) MiB) of HTTP (wrk -> nginx) and PostgreSQL (pgbench -S) on lo"

# --- 2. Read it back -------------------------------------------------------------------
# measure CMD...: prints "<seconds> <peak RSS KiB>" for one run.
measure() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - start
if done.returncode != 0:
    sys.exit(f"{sys.argv[1]} failed: {done.stderr.decode(errors='replace')}")
print(f"{elapsed:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
best_of() {
    local n=$1; shift
    local best=""
    for _ in $(seq 1 "$n"); do
        local t; t=$(measure "$@" | cut -d' ' -f1)
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    done
    echo "$best"
}
pps() { awk "BEGIN{printf \"%.0f\", $recorded / $1}"; }

"$tapline" capture -r "$big" --quiet 2>"$work/tapline.err" >/dev/null
grep "tapline: capture:" "$work/tapline.err" | cut -c1-160

t_tapline=$(best_of 3 "$tapline" capture -r "$big" --quiet)
t_tapline1=$(best_of 3 "$tapline" capture -r "$big" --quiet --workers 1)
t_json=$(best_of 3 "$tapline" capture -r "$big" --json)
# Capture, decode and reassembly alone: protocol decoding off for both servers' ports.
t_raw=$(best_of 3 "$tapline" capture -r "$big" --quiet --decode "$origin=tcp" --decode "$pgport=tcp")
t_tcpdump=$(best_of 3 tcpdump -r "$big" -w /dev/null)
t_tshark=$(best_of 1 tshark -r "$big" -q -z conv,tcp)

printf '%-48s %8s s %12s packets/s\n' "tapline capture -r F --quiet ($(nproc) workers)" "$t_tapline" "$(pps "$t_tapline")"
printf '%-48s %8s s %12s packets/s\n' "tapline capture -r F --quiet --workers 1" "$t_tapline1" "$(pps "$t_tapline1")"
printf '%-48s %8s s %12s packets/s\n' "tapline capture -r F --json >/dev/null" "$t_json" "$(pps "$t_json")"
printf '%-48s %8s s %12s packets/s\n' "tapline, HTTP/PostgreSQL decoding off" "$t_raw" "$(pps "$t_raw")"
printf '%-48s %8s s %12s packets/s\n' "tshark -r F -q -z conv,tcp" "$t_tshark" "$(pps "$t_tshark")"
printf '%-48s %8s s %12s packets/s\n' "tcpdump -r F -w /dev/null" "$t_tcpdump" "$(pps "$t_tcpdump")"
awk "BEGIN{printf \"tapline vs tshark: %.1fx faster (--quiet), %.1fx (--json); tcpdump (no decoding) vs tapline: %.1fx\n\", $t_tshark / $t_tapline, $t_tshark / $t_json, $t_tapline / $t_tcpdump}"

# --- 2b. The same capture inside tunnels -------------------------------------------------
# Every frame re-wrapped: its IP packet in GRE, or its Ethernet frame in VXLAN, behind an
# outer Ethernet/IPv4 header: the tunnel decoders and the inner-flow hash in the path.
python3 - "$big" "$work/gre.pcap" "$work/vxlan.pcap" <<'PY'
import struct, sys
src, gre_out, vxlan_out = sys.argv[1:]
data = open(src, "rb").read()
header = data[:24]
gre, vxlan = open(gre_out, "wb"), open(vxlan_out, "wb")
gre.write(header); vxlan.write(header)
eth = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00"
def outer(proto, payload):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                       bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])) + payload
at = 24
while at + 16 <= len(data):
    secs, micros, incl, orig = struct.unpack("<IIII", data[at:at + 16])
    frame = data[at + 16:at + 16 + incl]
    at += 16 + incl
    if len(frame) > 65000:  # no room for the outer headers: kept as it was
        gre.write(data[at - 16 - incl:at]); vxlan.write(data[at - 16 - incl:at])
        continue
    for out, wrapped in (
        (gre, eth + outer(47, b"\0\0\x08\x00" + frame[14:])),
        (vxlan, eth + outer(17, struct.pack("!HHHH", 40000, 4789, 16 + len(frame), 0)
                             + b"\x08\0\0\0\0\0\x2a\0" + frame)),
    ):
        out.write(struct.pack("<IIII", secs, micros, len(wrapped), len(wrapped)) + wrapped)
PY
for tunnel in gre vxlan; do
    t_in=$(best_of 3 "$tapline" capture -r "$work/$tunnel.pcap" --quiet)
    t_in_tshark=$(best_of 1 tshark -r "$work/$tunnel.pcap" -q -z conv,tcp)
    printf '%-48s %8s s %12s packets/s\n' "tapline capture -r F.$tunnel --quiet" "$t_in" "$(pps "$t_in")"
    printf '%-48s %8s s %12s packets/s\n' "tshark -r F.$tunnel -q -z conv,tcp" "$t_in_tshark" "$(pps "$t_in_tshark")"
    awk "BEGIN{printf \"in $tunnel: tapline vs tshark %.1fx faster; vs tapline on the plain capture %.2fx\n\", $t_in_tshark / $t_in, $t_tapline / $t_in}"
done

# --- 3. Memory with 100,000 concurrent flows -------------------------------------------
flows="$work/flows.pcap"
synth_flows "$flows" 100000
read -r t_flows rss_flows < <(measure "$tapline" capture -r "$flows" --quiet)
read -r _ rss_flows_raw < <(measure "$tapline" capture -r "$flows" --quiet --decode 80=tcp)
echo "100,000 concurrent flows (500,000 packets): peak RSS $((rss_flows / 1024)) MiB with HTTP decoding," \
     "$((rss_flows_raw / 1024)) MiB with decoding off (--decode 80=tcp); ${t_flows} s"
