#!/usr/bin/env bash
# Live capture loss: the highest packet rate replayed on lo that each capture takes with zero
# kernel drops, side by side in one run:
#   - tapline capture -i lo --quiet --workers 2 (decoding: flows, reassembly, HTTP), and the
#     same with --immediate-mode (libpcap's ring of MTU-sized slots on Linux);
#   - tcpdump -i lo -w /dev/null (no decoding);
#   - tshark -i lo -q -z conv,tcp (dumpcap captures to a temporary file, tshark dissects it).
# Every tool uses libpcap's default kernel buffer (2 MiB on Linux) and the filter
# 'tcp port 18080'.
#
# The traffic is a synthetic pcap (Ethernet with zero MACs, which Linux's loopback accepts):
# FLOWS HTTP/1.1 keep-alive flows between 10.77.x.x and 10.78.0.1:18080, 100 open at a time,
# each a handshake, two request/response exchanges and both FINs (12 packets, 54-172 bytes).
# tcpreplay sends it on lo at a given --pps, looping with --unique-ip (new addresses each
# loop, so every flow is new) for about SECONDS per trial. The kernel drops the packets
# after capture (10.78.0.1 is not a local address), so nothing answers them. On lo the packet
# socket sees every frame twice (sent and received; libpcap keeps the received copy), so the
# kernel's ring takes twice the replayed rate.
#
# A rate passes when the tool captured every replayed packet and libpcap counted no kernel
# (or interface) drop. Each tool climbs a ladder of rates until one fails, then bisects
# between the last pass and the first failure (BISECT steps). tcpreplay's own top speed with
# --topspeed is printed first: rates above it are not reached, and the achieved rate
# ("Rated: … pps") is what the table shows.
#
#   bench/zero_drop.sh [SECONDS] [BISECT]   (default 3 and 3, about 10 minutes; needs root, tcpreplay, tcpdump,
#                                            tshark, python3)
#
# Loopback only; installs nothing (scripts/install-deps.sh bench does); every process it
# starts is stopped by PID on exit.
set -euo pipefail

seconds="${1:-3}"
bisect="${2:-3}"
. "$(dirname "$0")/lib.sh"
bench_init zero_drop
require_root "live capture and tcpreplay on lo"
require tcpreplay tcpdump tshark python3 cargo
bench_build

port=18080
filter="tcp port $port"
flows_pcap="$work/flows.pcap"
python3 - "$flows_pcap" 20000 "$port" <<'PY'
import struct, sys
out, flows, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
f = open(out, "wb")
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
def csum(b):
    s = sum(struct.unpack("!10H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
def frame(src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\0" * 12 + b"\x08\x00" + ip + tcp
req = b"GET /item?id=42 HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: zero-drop\r\n\r\n"
resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n\r\n" + b"x" * 48
server = bytes([10, 78, 0, 1])
micros = 0
def write(frame):
    global micros
    micros += 10
    f.write(struct.pack("<IIII", 1_700_000_000 + micros // 1_000_000, micros % 1_000_000,
                        len(frame), len(frame)) + frame)
def flow(i):
    client = bytes([10, 77, (i >> 8) & 0xFF, i & 0xFF])
    sport = 20000 + i % 40000
    cs, ss = (1000 + i * 7919) % 2**32, (5000 + i * 104729) % 2**32
    c = lambda *a: frame(client, server, sport, port, *a)
    s = lambda *a: frame(server, client, port, sport, *a)
    c1, s1 = cs + 1, ss + 1
    packets = [c(cs, 0, 0x02), s(ss, c1, 0x12), c(c1, s1, 0x10)]
    for _ in range(2):
        packets += [c(c1, s1, 0x18, req), s(s1, c1 + len(req), 0x18, resp)]
        c1 += len(req); s1 += len(resp)
        packets.append(c(c1, s1, 0x10))
    packets += [c(c1, s1, 0x11), s(s1, c1 + 1, 0x11), c(c1 + 1, s1 + 1, 0x10)]
    return packets
for base in range(0, flows, 100):
    block = [flow(i) for i in range(base, min(base + 100, flows))]
    for step in range(len(block[0])):
        for packets in block:
            write(packets[step])
f.close()
PY
per_loop=$(tcpdump -r "$flows_pcap" -n 2>/dev/null | wc -l)

# replay RATE: sends about $seconds of the flows at RATE pps on lo; prints "SENT PPS".
replay() {
    local loops=$(( ($1 * seconds + per_loop - 1) / per_loop ))
    tcpreplay --intf1=lo --pps="$1" --loop="$loops" --unique-ip --preload-pcap "$flows_pcap" \
        >"$work/tcpreplay.out" 2>&1
    awk '/Successful packets:/ {sent=$3} /Rated:/ {gsub(",", ""); pps=$(NF-1)} END {printf "%d %.0f\n", sent, pps}' \
        "$work/tcpreplay.out"
}

# start TOOL: starts one capture in the background and waits until it listens; sets cap_pid.
start() {
    local err="$work/$1.err"
    case $1 in
        tapline) "$tapline" capture -i lo --quiet --workers 2 "$filter" 2>"$err" & ;;
        tapline-immediate)
            "$tapline" capture -i lo --quiet --workers 2 --immediate-mode "$filter" 2>"$err" & ;;
        tcpdump) tcpdump -i lo -n -w /dev/null "$filter" 2>"$err" & ;;
        tshark) tshark -i lo -n -f "$filter" -q -z conv,tcp >/dev/null 2>"$err" & ;;
    esac
    cap_pid=$!
    pids+=("$cap_pid")
    local ready
    case $1 in
        tapline*|tcpdump) ready="listening on lo" ;;
        tshark) ready="Capturing on" ;;
    esac
    for _ in $(seq 1 200); do grep -q "$ready" "$err" && break; sleep 0.05; done
    sleep 0.3
}

# counters TOOL: "CAPTURED DROPPED" from a stopped capture's stderr.
counters() {
    local err="$work/$1.err"
    case $1 in
        tapline*)
            sed -n 's/.*capture: \([0-9]*\) packets.*kernel: [0-9]* received, \([0-9]*\) dropped (\([0-9]*\) by the interface).*/\1 \2 \3/p' "$err" |
                awk '{print $1, $2 + $3}' ;;
        tcpdump)
            awk '/packets captured/ {c=$1} /dropped by kernel/ {d=$1} /dropped by interface/ {i=$1}
                 END {print c, d + i}' "$err" ;;
        tshark)
            awk '/packets captured/ {c=$1} /packets? dropped/ {d+=$1} END {print c + 0, d + 0}' "$err" ;;
    esac
}

# trial TOOL RATE: one capture while RATE pps are replayed, stopped with SIGTERM (all three
# print their counters then); sets verdict (pass|fail), sent, pps, captured, dropped.
trial() {
    start "$1"
    read -r sent pps < <(replay "$2")
    sleep 1
    kill -TERM "$cap_pid"
    wait "$cap_pid" 2>/dev/null || true
    captured=""; dropped=""
    read -r captured dropped < <(counters "$1") || true
    verdict=fail
    if [ "${dropped:-1}" = 0 ] && [ "${captured:-0}" -ge "$sent" ]; then verdict=pass; fi
    printf '  %-17s --pps %7d: achieved %7s pps, sent %8s, captured %8s, dropped %7s  %s\n' \
        "$1" "$2" "$pps" "$sent" "${captured:-?}" "${dropped:-?}" "$verdict"
}

tcpreplay --intf1=lo --topspeed --loop=5 --unique-ip --preload-pcap "$flows_pcap" >"$work/top.out" 2>&1
top=$(awk '/Rated:/ {gsub(",", ""); printf "%.0f", $(NF-1)}' "$work/top.out")
echo "replayed: $per_loop packets a loop (20000 HTTP flows of 12), ~${seconds} s a trial; tcpreplay --topspeed on lo: $top pps"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

ladder=(25000 50000 100000 150000 200000 300000 400000 600000 800000)
declare -A best
for tool in tapline tapline-immediate tcpdump tshark; do
    last_pass=0; first_fail=0
    for rate in "${ladder[@]}"; do
        trial "$tool" "$rate"
        if [ "$verdict" = pass ]; then last_pass=$pps; last_rate=$rate; else first_fail=$rate; break; fi
    done
    if [ "$first_fail" != 0 ]; then
        low=${last_rate:-0}; high=$first_fail
        for _ in $(seq 1 "$bisect"); do
            mid=$(( (low + high) / 2 ))
            trial "$tool" "$mid"
            if [ "$verdict" = pass ]; then low=$mid; last_pass=$pps; else high=$mid; fi
        done
    fi
    best[$tool]=$last_pass
    unset last_rate
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-52s %12s\n' "capture on lo (filter '$filter')" "zero-drop pps"
printf '%-52s %12s\n' "tapline capture --quiet --workers 2 (decoding)" "${best[tapline]}"
printf '%-52s %12s\n' "the same with --immediate-mode" "${best[tapline-immediate]}"
printf '%-52s %12s\n' "tcpdump -w /dev/null" "${best[tcpdump]}"
printf '%-52s %12s\n' "tshark -q -z conv,tcp (dumpcap to a temp file)" "${best[tshark]}"
[ "${best[tapline]}" -lt "$top" ] && [ "${best[tcpdump]}" -lt "$top" ] ||
    echo "(a rate at tcpreplay's top speed: the sender, not the capture, was the limit)"
