//! Fresh traffic, decoded three ways that must agree: tcpdump records real PostgreSQL and
//! HTTP clients on `lo`; tshark and `tapline capture -r` read that file; then the same
//! workload runs through `tapline proxy` mapping proxies. The SQL statements (Query and
//! Parse texts), HTTP requests (method, path) and status codes must be the same lists.
//!
//! PostgreSQL: psql scripts (SSLRequest refused, DDL, NULLs, COPY in and out, a 3000-row
//! result, an error), pgbench's extended protocol with a prepared statement reused with
//! parameters, and psycopg2 (PREPARE/EXECUTE with parameters). HTTP against `tapline demo`:
//! curl keep-alive with a chunked response, a form POST, HEAD; Python's http.client with
//! large and chunked request bodies and a 204.

mod common;
mod decode_tshark;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    can_capture, demo, have, json_lines, record_lo, run_ok, start_mapping, tapline, temp_dir,
    Postgres,
};
use decode_tshark::{every_port_as, tshark_facts, Facts};

/// `tapline capture -r FILE --json`: its JSON lines.
fn capture_lines(file: &Path) -> Vec<serde_json::Value> {
    let out = tapline()
        .args(["capture", "-r"])
        .arg(file)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tapline capture: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

fn merged(lines: &[serde_json::Value]) -> Facts {
    Facts::merged(Facts::from_json_lines(lines).values())
}

/// Runs `workload` against a `tapline proxy` mapping `LISTEN=SCHEME://upstream`; merged facts.
fn proxy_facts(scheme: &str, upstream: SocketAddr, workload: impl FnOnce(SocketAddr)) -> Facts {
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let (mut p, listen) = start_mapping(
        scheme,
        upstream,
        &["--quiet", "--output", events.to_str().unwrap()],
    );
    workload(listen);
    assert_eq!(p.stop(Duration::from_secs(20)), Some(0), "{}", p.stderr());
    merged(&json_lines(&events))
}

const PSQL_SCRIPT: &str = "DROP TABLE IF EXISTS t;
CREATE TABLE t (a int, b text);
INSERT INTO t VALUES (1, 'one'), (2, NULL);
COPY t FROM STDIN;
3\tthree
4\t\\N
\\.
SELECT * FROM t ORDER BY a;
COPY t TO STDOUT;
SELECT g, repeat('x', 40) FROM generate_series(1, 3000) g;
SELECT 1/0;
";

const PGBENCH_SCRIPT: &str = "\\set id random(1, 4)
SELECT a, b FROM t WHERE a = :id;
";

const PSYCOPG2: &str = "
import sys, psycopg2
c = psycopg2.connect(host='127.0.0.1', port=int(sys.argv[1]), user='postgres',
                     dbname='postgres', sslmode='disable')
cur = c.cursor()
cur.execute('PREPARE q(int) AS SELECT a, b FROM t WHERE a = $1')
for i in (1, 2, 4):
    cur.execute('EXECUTE q(%s)', (i,))
    cur.fetchall()
cur.execute('SELECT %s::text, %s', (\"it's\", None))
assert cur.fetchone() == (\"it's\", None)
c.commit()
c.close()
";

fn pg_workload(addr: SocketAddr, dir: &Path) {
    let script = dir.join("script.sql");
    std::fs::write(&script, PSQL_SCRIPT).unwrap();
    let out = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-f"])
        .arg(&script)
        .env("PGSSLMODE", "prefer")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3000 rows"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("division by zero"));

    let bench = dir.join("bench.sql");
    std::fs::write(&bench, PGBENCH_SCRIPT).unwrap();
    let pgbench = Path::new("/usr/lib/postgresql")
        .read_dir()
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
        .find(|p| p.exists())
        .expect("pgbench beside the PostgreSQL server");
    run_ok(
        "pgbench",
        Command::new(pgbench)
            .args(["-n", "-M", "prepared", "-t", "3", "-h", "127.0.0.1"])
            .args(["-p", &addr.port().to_string(), "-U", "postgres", "-f"])
            .arg(&bench)
            .arg("postgres")
            .env("PGSSLMODE", "disable"),
    );
    run_ok(
        "psycopg2",
        Command::new("python3").args(["-c", PSYCOPG2, &addr.port().to_string()]),
    );
}

#[test]
fn postgres_capture_tshark_and_proxy_agree() {
    if !can_capture() || !have("tcpdump") || !have("tshark") {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let dir = temp_dir();
    let file = dir.path().join("pg.pcap");
    record_lo(&file, pg.addr.port(), || pg_workload(pg.addr, dir.path()));

    let rules = every_port_as(&file, "pgsql");
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let tshark = Facts::merged(tshark_facts(&file, &rules).values());
    assert!(
        tshark
            .sql
            .iter()
            .any(|s| s.starts_with("COPY t FROM STDIN"))
            && tshark
                .sql
                .iter()
                .filter(|s| s.contains("WHERE a = $1"))
                .count()
                == 2,
        "the workload ran as planned: {tshark:?}"
    );
    let lines = capture_lines(&file);
    assert_eq!(
        merged(&lines),
        tshark,
        "tapline capture (left) vs tshark (right)"
    );

    // Transactions: statement, parameters, rows, SQLSTATE.
    let tx: Vec<_> = lines
        .iter()
        .filter(|l| l["kind"] == "transaction")
        .collect();
    let find = |sql: &'static str| {
        tx.iter()
            .filter(move |t| t["sql"].as_str().unwrap().starts_with(sql))
    };
    let error = find("SELECT 1/0").next().expect("the failing statement");
    assert_eq!(error["error_code"], "22012", "{error}");
    assert_eq!(
        find("SELECT g, repeat").next().expect("the big result")["rows"],
        3000
    );
    assert_eq!(
        find("COPY t FROM STDIN").next().expect("COPY in")["rows"],
        2
    );
    let prepared: Vec<_> = find("SELECT a, b FROM t WHERE a = $1").collect();
    assert_eq!(
        prepared.len(),
        3,
        "pgbench's three executions: {prepared:?}"
    );
    assert!(prepared
        .iter()
        .all(|t| t["params"].as_array().unwrap().len() == 1 && t["rows"] == 1));
    assert_eq!(find("EXECUTE q(").count(), 3);
    // SQL NULLs are JSON nulls in DataRow values.
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "DataRow"
                && l["fields"]["values"] == serde_json::json!(["2", null]))
    );

    let proxied = proxy_facts("psql", pg.addr, |addr| pg_workload(addr, dir.path()));
    assert_eq!(proxied, tshark, "tapline proxy (left) vs tshark (right)");
}

const HTTP_CLIENT: &str = "
import sys, http.client
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=20)
def call(method, path, body=None, **kw):
    c.request(method, path, body=body, **kw)
    r = c.getresponse()
    r.read()
    return r.status
assert call('GET', '/bytes/5000') == 200
assert call('POST', '/echo', body=b'x' * 10000) == 200
assert call('POST', '/echo?chunked=1', body=iter([b'ab', b'cd', b'ef']), encode_chunked=True) == 200
assert call('GET', '/status/204') == 204
assert call('GET', '/chunked/10') == 200
c.close()
";

fn http_workload(addr: SocketAddr) {
    let base = format!("http://{addr}");
    run_ok(
        "curl keep-alive",
        Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
            ])
            .arg(format!("{base}/chunked/100000"))
            .arg(format!("{base}/status/404"))
            .arg(format!("{base}/")),
    );
    run_ok(
        "curl POST",
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-d", "a=1&b=2"])
            .arg(format!("{base}/echo")),
    );
    run_ok(
        "curl HEAD",
        Command::new("curl")
            .args(["-sS", "-I"])
            .arg(format!("{base}/")),
    );
    run_ok(
        "python http.client",
        Command::new("python3").args(["-c", HTTP_CLIENT, &addr.port().to_string()]),
    );
}

#[test]
fn http_capture_tshark_and_proxy_agree() {
    if !can_capture() || !have("tcpdump") || !have("tshark") || !have("curl") {
        return;
    }
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let file = dir.path().join("http.pcap");
    record_lo(&file, origin.port(), || http_workload(origin));

    let rules = every_port_as(&file, "http");
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let tshark = Facts::merged(tshark_facts(&file, &rules).values());
    assert_eq!(
        tshark.requests.len(),
        10,
        "the workload ran as planned: {tshark:?}"
    );
    let lines = capture_lines(&file);
    assert_eq!(
        merged(&lines),
        tshark,
        "tapline capture (left) vs tshark (right)"
    );
    let tx = lines.iter().filter(|l| l["kind"] == "transaction").count();
    assert_eq!(tx, 10, "every request paired with its response");

    let proxied = proxy_facts("http", origin, http_workload);
    assert_eq!(proxied, tshark, "tapline proxy (left) vs tshark (right)");
}
