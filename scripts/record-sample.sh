#!/usr/bin/env bash
# Records samples/sample.pcap, the capture the README's first command analyses: real HTTP and
# PostgreSQL traffic on loopback (tapline's demo origin on :8080, a throwaway PostgreSQL on
# :5432), including a request whose User-Agent says "pcap" as in riff's example.
# Needs: tcpdump, curl, psql, PostgreSQL server binaries (it builds tapline, or TAPLINE=path).
# Run as root from the repository root. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=samples/sample.pcap
bin=${TAPLINE:-$(scripts/build-tapline.sh)}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chown postgres "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

runuser -u postgres -- "$pgbin/initdb" -D "$work/data" -A trust -U postgres --no-sync >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 5432 -k $work" start >/dev/null
"$bin" demo --address 127.0.0.1:8080 2>/dev/null & pids+=($!)
sleep 0.5

tcpdump -i lo -U -s 0 -w "$out" 'tcp and (port 8080 or port 5432)' 2>/dev/null & pids+=($!)
sleep 1

curl -s -o /dev/null http://127.0.0.1:8080/
curl -s -o /dev/null -A "Mozilla/5.0 (compatible; pcap scanner)" "http://127.0.0.1:8080/echo?probe=1"
curl -s -o /dev/null -X POST -H 'content-type: application/json' -d '{"user":"ada","plan":"pro"}' http://127.0.0.1:8080/echo
for path in status/404 chunked/40000 bytes/2048; do curl -s -o /dev/null "http://127.0.0.1:8080/$path"; done
curl -s -o /dev/null "http://127.0.0.1:8080/slow?ms=120"
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres PGSSLMODE=disable
psql -X -q -d postgres >/dev/null 2>&1 <<'SQL' || true
create table accounts (id serial primary key, username text not null, email text);
insert into accounts (username, email) values ('ada', 'ada@example.org'), ('grace', null), ('linus', 'linus@example.org');
select id, username, email from accounts order by id;
update accounts set email = 'grace@example.org' where username = 'grace';
select pg_sleep(0.15);
select 1/0;
select count(*) from accounts where email is not null;
delete from accounts where username = 'linus';
SQL
python3 - <<'PY' || echo "psycopg2 missing: no extended-protocol queries in the sample" >&2
import psycopg2
c = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", sslmode="disable")
cur = c.cursor()
cur.execute("select username from accounts where id = %s", (1,))
cur.fetchall()
c.commit()
c.close()
PY
sleep 1
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
chown "$(id -u):$(id -g)" "$out"
echo "wrote $out: $(tcpdump -r "$out" 2>/dev/null | wc -l) packets"
