#!/usr/bin/env bash
# Installs what tapline needs on a fresh Debian machine, skipping what is already there.
#   scripts/install-deps.sh build   libpcap (to build and run tapline)
#   scripts/install-deps.sh test    + the real peers the tests start: PostgreSQL, psql, curl,
#                                     openssl, tcpdump, tshark, rsyslog, Python grpcio, psycopg2,
#                                     requests, headless Chromium + certutil + Python playwright
#                                     (driving Debian's chromium: no browser is downloaded)
#                                     nats-server and redis-server (export/collect brokers)
#   scripts/install-deps.sh bench   + nginx, wrk, iperf3, hyperfine, haproxy, socat, pgbouncer, tcpreplay, pgreplay, and mitmproxy in a venv
#                                     (benchmark peers)
set -euo pipefail
level=${1:-build}
apt_pkgs=(libpcap-dev pkg-config curl)
pip_mods=()
if [ "$level" = test ] || [ "$level" = bench ]; then
  apt_pkgs+=(postgresql postgresql-client curl openssl tcpdump tshark rsyslog procps util-linux
            chromium libnss3-tools nats-server redis-server)
  pip_mods+=(grpcio grpcio-tools psycopg2-binary "psycopg[binary]" prometheus-client requests playwright jsonschema)
fi
if [ "$level" = bench ]; then
  apt_pkgs+=(nginx-light wrk iperf3 hyperfine haproxy socat pgbouncer tcpreplay pgreplay)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$level" = bench ] && [ ! -x /opt/tapline-bench-venv/bin/mitmdump ]; then
  echo "installing mitmproxy (bench peer) into /opt/tapline-bench-venv" >&2
  python3 -m venv /opt/tapline-bench-venv
  /opt/tapline-bench-venv/bin/pip install -q --disable-pip-version-check mitmproxy
fi

if [ ${#pip_mods[@]} -gt 0 ]; then
  if ! python3 -c "import grpc, grpc_tools, psycopg2, psycopg, prometheus_client, requests, playwright, jsonschema" 2>/dev/null; then
    echo "installing Python packages: ${pip_mods[*]}" >&2
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_mods[@]}" \
      || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${pip_mods[@]}"
  fi
fi
