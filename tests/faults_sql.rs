//! Built-in SQL faults through a `psql` mapping against a real PostgreSQL: an error aimed at
//! one statement (psql, pgbench), latency added to matching statements only (measured by
//! tapline's own transactions), and a reset that makes psycopg report a lost connection and
//! reconnect. Runs alone (see .config/nextest.toml): the latency test measures time.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{have, have_psycopg, json_lines, psql_session, start_mapping, temp_dir, Postgres};

#[test]
fn a_sql_error_hits_only_the_matching_statement() {
    let Some(pg) = Postgres::start_with(|_| "-c log_statement=all".into()) else {
        return;
    };
    let dir = temp_dir();
    let out = dir.path().join("events.jsonl");
    let (mut proxy, listen) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--output",
            out.to_str().unwrap(),
            "--with-sql-error",
            "--sql-error-code",
            "40001",
            "--sql-error-message",
            "could not serialize access (rehearsal)",
            "--sql-error-match",
            r"^\s*update\s+orders",
        ],
    );
    let (_, stdout, stderr) = psql_session(
        listen,
        &[
            "create table orders (id int, state text)",
            "insert into orders values (1, 'new')",
            "UPDATE orders SET state = 'paid' WHERE id = 1",
            "select state from orders",
        ],
    );
    assert!(
        stderr.contains("ERROR:  could not serialize access (rehearsal)"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("ERROR").count(), 1, "{stderr}");
    assert!(stdout.contains("new"), "the update never ran: {stdout}");
    assert!(!pg.log().contains("paid"), "the server never saw it");

    // pgbench's own statements do not match: every transaction goes through.
    if have("pgbench") {
        let bench = |args: &[&str]| {
            let o = Command::new("pgbench")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &listen.port().to_string(),
                    "-U",
                    "postgres",
                ])
                .args(args)
                .arg("postgres")
                .env("PGSSLMODE", "disable")
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr),
            )
        };
        let (ok, text) = bench(&["-i", "-q", "-s", "1"]);
        assert!(ok, "{text}");
        let (ok, text) = bench(&["-S", "-c", "2", "-t", "200", "-M", "prepared"]);
        assert!(ok, "{text}");
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }

    proxy.stop(Duration::from_secs(10));
    let tx: Vec<_> = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "transaction" && e["injected"] == "sql-error")
        .collect();
    assert_eq!(tx.len(), 1, "{tx:?}");
    assert_eq!(tx[0]["error_code"], "40001");
    assert_eq!(tx[0]["injected_by"], "fault plugin sql-error");
}

#[test]
fn sql_latency_slows_only_matching_statements() {
    let Some(pg) = Postgres::start() else { return };
    let dir = temp_dir();
    let out = dir.path().join("events.jsonl");
    let (mut proxy, listen) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--output",
            out.to_str().unwrap(),
            "--with-sql-latency",
            "--sql-latency-match",
            "slow_report",
            "--sql-latency-mean",
            "300",
            "--sql-latency-stddev",
            "0",
        ],
    );
    psql_session(
        listen,
        &[
            "select 'fast_1'",
            "select 'slow_report'",
            "select 'fast_2'",
            "select 'SLOW_REPORT again'",
        ],
    );
    proxy.stop(Duration::from_secs(10));
    let latency = |needle: &str| -> f64 {
        let tx: Vec<f64> = json_lines(&out)
            .iter()
            .filter(|e| {
                e["kind"] == "transaction" && e["sql"].as_str().unwrap_or("").contains(needle)
            })
            .map(|e| e["latency_ms"].as_f64().unwrap())
            .collect();
        assert_eq!(tx.len(), 1, "one transaction for {needle}");
        tx[0]
    };
    for slow in ["slow_report", "SLOW_REPORT again"] {
        let ms = latency(slow);
        assert!((300.0..600.0).contains(&ms), "{slow}: {ms} ms");
    }
    for fast in ["fast_1", "fast_2"] {
        let ms = latency(fast);
        assert!(ms < 150.0, "{fast}: {ms} ms");
    }
}

#[test]
fn a_sql_reset_drops_the_connection_and_the_client_reconnects() {
    if !have_psycopg() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let (_proxy, listen) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--with-sql-reset",
            "--sql-reset-match",
            "from failover_target",
        ],
    );
    let script = format!(
        r#"
import json, psycopg
def connect():
    return psycopg.connect(host="127.0.0.1", port={port}, user="postgres", dbname="postgres",
                           sslmode="disable", autocommit=True, connect_timeout=10)
out = []
conn = connect()
out.append(conn.execute("select 1").fetchone()[0])
try:
    conn.execute("select * from failover_target")
    out.append("no error")
except psycopg.OperationalError as e:
    out.append("lost")
    out.append(conn.closed)
conn = connect()
out.append(conn.execute("select 2").fetchone()[0])
print(json.dumps(out))
"#,
        port = listen.port()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout.trim(), "[1, \"lost\", true, 2]");
}
