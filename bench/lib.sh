# Shared by the bench/*.sh scripts (sourced, not run): a work directory, processes stopped by
# PID on exit, tool checks, free ports, the release build, and a throwaway PostgreSQL cluster.
#   . "$(dirname "$0")/lib.sh"; bench_init NAME
# After bench_init: $root (the repository), $work (removed on exit unless KEEP=1), $tapline
# (after bench_build), and the array pids (every PID in it is killed on exit).

bench_init() {
    bench_name=$1
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    work="$(mktemp -d "/tmp/tapline-bench-$bench_name.XXXXXX")"
    chmod 755 "$work"
    pids=()
    pgdata=""
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$pgdata" ] && [ -d "$pgdata" ]; then
        runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}

# bench_fail MESSAGE: one line naming the script, exit 2.
bench_fail() { echo "bench/$bench_name.sh: $*" >&2; exit 2; }

# require TOOL...: each must be on PATH.
require() {
    for tool in "$@"; do command -v "$tool" >/dev/null || bench_fail "$tool is required"; done
}

require_root() { [ "$(id -u)" = 0 ] || bench_fail "run as root ($*)"; }

# bench_build: the release binary (wherever cargo puts it), or $TAPLINE_BIN when given
# (e.g. an older commit's).
bench_build() {
    if [ -n "${TAPLINE_BIN:-}" ]; then
        tapline="$TAPLINE_BIN"
    else
        tapline=$("$root/scripts/build-tapline.sh" --release)
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: until something listens on 127.0.0.1:PORT (20 s at most).
wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    bench_fail "nothing listens on port $1"
}

# Where Debian keeps the newest PostgreSQL server binaries.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# start_postgres PORT: a trust-auth cluster in $work/pg on 127.0.0.1:PORT, stopped on exit.
start_postgres() {
    local bin
    bin="$(pg_bin)"
    [ -x "$bin/initdb" ] || bench_fail "PostgreSQL server binaries are required"
    pgdata="$work/pg"
    mkdir -p "$pgdata" && chown postgres:postgres "$pgdata"
    runuser -u postgres -- "$bin/initdb" -D "$pgdata/data" -A trust -U postgres --no-sync >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$pgdata/data" -l "$pgdata/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $1 -k $pgdata -c fsync=off" start >/dev/null
    pgdata="$pgdata/data"
}

# start_pgbouncer PORT PG_PORT [EXTRA_INI_LINES]: PgBouncer in session mode on 127.0.0.1:PORT
# in front of the PostgreSQL on PG_PORT (trust auth), with EXTRA_INI_LINES appended to its
# [pgbouncer] section (e.g. TLS settings); stopped on exit.
start_pgbouncer() {
    mkdir -p "$work/bouncer"
    cat >"$work/bouncer/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$2 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = trust
auth_file = $work/bouncer/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/bouncer/log
pidfile = $work/bouncer/pid
${3:-}
INI
    echo '"postgres" ""' >"$work/bouncer/users.txt"
    chown -R postgres "$work/bouncer"
    runuser -u postgres -- pgbouncer "$work/bouncer/pgbouncer.ini" >/dev/null 2>&1 & pids+=($!)
}

# nginx_conf NAME WORKERS BODY: $work/NAME/nginx.conf, a foreground nginx in $work/NAME with
# BODY inside its http block.
nginx_conf() {
    mkdir -p "$work/$1"
    cat >"$work/$1/nginx.conf" <<NGINX
user root;
worker_processes $2;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/$1;
    proxy_temp_path $work/$1;
    fastcgi_temp_path $work/$1;
    uwsgi_temp_path $work/$1;
    scgi_temp_path $work/$1;
    $3
}
NGINX
}

# wrk_stats URL [wrk args...] -> "requests/s p50_ms p99_ms" with wrk -t2 -c$conns for $secs;
# fails on non-2xx answers, and on socket errors unless WRK_SOCKET_ERRORS=ok (runs that close
# every connection on purpose).
wrk_stats() {
    local url=$1; shift
    timeout $((secs + 30)) wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "$url" |
        awk -v socket_ok="${WRK_SOCKET_ERRORS:-}" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
            if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /Requests\/sec/ { rps = $2 }
        /Non-2xx/ { bad = bad " " $0 }
        /Socket errors/ && socket_ok != "ok" { bad = bad " " $0 }
        END { if (bad != "") { print "wrk reported errors:" bad > "/dev/stderr"; exit 1 }
              printf "%s %.3f %.3f\n", rps, p50, p99 }'
}

# synth_flows FILE FLOWS: a pcap of FLOWS concurrent TCP flows, 5 packets each (handshake, an
# HTTP request, its answer, no FIN: every flow is open at the end).
synth_flows() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
out, flows = sys.argv[1], int(sys.argv[2])
f = open(out, "wb")
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
def csum(b):
    s = sum(struct.unpack("!10H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
def frame(src, dst, sport, dport, seq, ack, flags, payload):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + tcp
req = b"GET /item HTTP/1.1\r\nHost: bench\r\nUser-Agent: synth\r\n\r\n"
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
micros = 0
def write(fr):
    global micros
    micros += 1
    f.write(struct.pack("<IIII", 1_700_000_000 + micros // 1_000_000, micros % 1_000_000, len(fr), len(fr)) + fr)
server = bytes([10, 1, 0, 1])
for i in range(flows):
    client = bytes([10, 2, (i >> 8) & 0xFF, i & 0xFF])
    sport = 1024 + (i >> 16)
    cs, ss = 1000 + i, 5000 + i
    write(frame(client, server, sport, 80, cs, 0, 0x02, b""))
    write(frame(server, client, 80, sport, ss, cs + 1, 0x12, b""))
    write(frame(client, server, sport, 80, cs + 1, ss + 1, 0x10, b""))
    write(frame(client, server, sport, 80, cs + 1, ss + 1, 0x18, req))
    write(frame(server, client, 80, sport, ss + 1, cs + 1 + len(req), 0x18, resp))
f.close()
PY
}
