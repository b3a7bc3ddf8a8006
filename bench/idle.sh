#!/usr/bin/env bash
# tapline's memory per idle proxied connection: N connections held open and silent through a
# tcp mapping, N CONNECT tunnels, and N keep-alive HTTP clients after one request each, with
# the proxy's resident memory (VmRSS) read before and after; `tapline demo` is the origin.
#   bench/idle.sh [N]   (default 1000; needs python3)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init idle
n=${1:-1000}
require python3
bench_build
# Room for N connections on both ends (root may raise the hard limit).
ulimit -Hn $((8 * n + 1000)) 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

origin=$(free_port)
"$tapline" demo --address "127.0.0.1:$origin" >/dev/null 2>&1 & pids+=($!)
wait_port "$origin"

echo "tapline idle connections: $n each, $(date -u +%FT%TZ), commit $(git -C "$root" rev-parse --short HEAD)"
printf '%-10s %7s %12s %12s %10s\n' kind n "rss before" "rss after" "KiB/conn"
# A fresh proxy for each kind, so no kind reuses memory another one freed.
for kind in mapping tunnel keepalive; do
    forward=$(free_port); mapping=$(free_port)
    "$tapline" proxy --quiet --proxy-address "127.0.0.1:$forward" --max-connections $((n + 100)) \
        --proxy "$mapping=tcp://127.0.0.1:$origin" 2>>"$work/tapline.err" & proxy=$!; pids+=($proxy)
    wait_port "$forward"; wait_port "$mapping"
    case $kind in
        mapping) addr="127.0.0.1:$mapping" ;;
        *) addr="127.0.0.1:$forward" ;;
    esac
    read -r k count before after per < <(python3 "$root/bench/idle_conns.py" "$proxy" "$kind" "$addr" "$n" "127.0.0.1:$origin")
    printf '%-10s %7s %9s KiB %9s KiB %10s\n' "$k" "$count" "$before" "$after" "$per"
    kill "$proxy"; wait "$proxy" 2>/dev/null || true
done
echo "target: <= 10 KiB of tapline memory per idle proxied connection"
