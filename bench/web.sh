#!/usr/bin/env bash
# The web view's cost to the proxy: forward-proxy requests/s with wrk through three tapline
# proxies in the same run: plain, with --web and nobody looking, and with --web and a
# headless Chromium page open on it following the live stream (Debian's chromium driven by
# Python playwright). Rounds alternate between them; the page's row count at the end shows
# it kept up.
#
#   bench/web.sh [SECONDS_PER_RUN] [ROUNDS]   (defaults 10 and 3; needs wrk, nginx, chromium,
#                                              python3 with playwright)
#
# Loopback only; installs nothing; every process it starts is stopped by PID on exit.
set -euo pipefail

secs="${1:-10}"
rounds="${2:-3}"
conns=50
. "$(dirname "$0")/lib.sh"
bench_init web
require wrk nginx python3 chromium
python3 -c 'import playwright' 2>/dev/null || bench_fail "python3 playwright is required"
bench_build

origin=$(free_port); plain=$(free_port); viewed=$(free_port); web=$(free_port)
unseen=$(free_port); unseen_web=$(free_port)
nginx_conf origin 1 "server { listen 127.0.0.1:$origin; location / { return 200 \"hello from the origin\\n\"; } }"
nginx -c "$work/origin/nginx.conf" -p "$work/origin" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$plain" 2>"$work/plain.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$viewed" --web "127.0.0.1:$web" \
    2>"$work/viewed.err" & pids+=($!)
"$tapline" proxy --quiet --proxy-address "127.0.0.1:$unseen" --web "127.0.0.1:$unseen_web" \
    2>"$work/unseen.err" & pids+=($!)
wait_port "$origin"; wait_port "$plain"; wait_port "$viewed"; wait_port "$web"; wait_port "$unseen"

# A page that follows the stream until killed, printing its row count every second.
cat >"$work/follow.py" <<'PY'
import sys, time
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium",
                          args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                "--disable-component-update", "--disable-sync", "--no-first-run"])
    page = b.new_page()
    page.goto(sys.argv[1])
    while True:
        print(page.inner_text("#total"), flush=True)
        time.sleep(1)
PY
python3 "$work/follow.py" "http://127.0.0.1:$web/" >"$work/page.log" 2>&1 & pids+=($!)
sleep 3

cat >"$work/forward.lua" <<LUA
wrk.path = "http://127.0.0.1:$origin/"
wrk.headers["Host"] = "127.0.0.1:$origin"
LUA

echo "tapline web view bench: ${secs}s per run, $rounds rounds, $(nproc) cores, wrk -t2 -c$conns, $(date -u +%FT%TZ)"
best_plain=0; best_viewed=0
for round in $(seq 1 "$rounds"); do
    p=$(wrk_stats "http://127.0.0.1:$plain/" -s "$work/forward.lua" | cut -d' ' -f1)
    u=$(wrk_stats "http://127.0.0.1:$unseen/" -s "$work/forward.lua" | cut -d' ' -f1)
    v=$(wrk_stats "http://127.0.0.1:$viewed/" -s "$work/forward.lua" | cut -d' ' -f1)
    printf 'round %d: plain %8.0f req/s   --web, no page %8.0f (%.2f)   --web, a page following %8.0f (%.2f)\n' \
        "$round" "$p" "$u" "$(python3 -c "print($u / $p)")" "$v" "$(python3 -c "print($v / $p)")"
    best_plain=$(python3 -c "print(max($best_plain, $p))"); best_viewed=$(python3 -c "print(max($best_viewed, $v))")
done
printf 'best of %d: plain %.0f req/s, --web with a page %.0f req/s: %.2fx\n' "$rounds" \
    "$best_plain" "$best_viewed" "$(python3 -c "print($best_viewed / $best_plain)")"
echo "the page counted $(tail -1 "$work/page.log") rows (the view keeps the newest 10,000)"
echo "proxy RSS: plain $(ps -o rss= -p "${pids[1]}") KiB, with --web $(ps -o rss= -p "${pids[2]}") KiB"
