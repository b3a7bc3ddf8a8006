//! `tapline replay` of PostgreSQL: tcpdump records a psycopg workload (simple and extended
//! protocol, NULL and binary parameters, a prepared statement executed several times, a
//! transaction block, an error, COPY FROM STDIN) against one cluster; the recording is
//! replayed into a fresh cluster with the same schema. Both servers log every statement
//! (`log_statement=all`): the logs must list the same statements; the report must find every
//! statement's tag, rows and SQLSTATE the same; `--speed max` must take less time than the
//! capture did; a Lua plugin sees every replayed transaction; `--limit` and `--filter-sql`
//! cut the replay down. Then the bad inputs: no replayable traffic, a refused connection, a
//! password the server asks for and is not given, a wrong one (SCRAM-SHA-256), the right one,
//! an unknown `--to` protocol.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{
    can_capture, have, have_psycopg, json_lines, record_lo, run_tapline, temp_dir, Postgres,
};

const SCHEMA: &str =
    "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, data bytea)";

const WORKLOAD: &str = r#"
import sys, time, psycopg
port = int(sys.argv[1])
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                     autocommit=True) as conn:
    # The simple query protocol.
    conn.pgconn.exec_(b"INSERT INTO items (id, name, price) VALUES (1, 'one', 1.5)")
    cur = conn.cursor()
    # The extended protocol: a NULL, a binary parameter, binary results.
    cur.execute("INSERT INTO items (id, name, price, data) VALUES (%s, %s, %s, %b)",
                (2, None, 2.5, b"\x00\x01\xff"))
    cur.execute("SELECT id, name, data FROM items WHERE id = %s", (2,), binary=True)
    time.sleep(0.4)
    # A prepared statement executed several times.
    for i in range(3, 9):
        cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (i, "n%d" % i), prepare=True)
    # A transaction block.
    with conn.transaction():
        cur.execute("UPDATE items SET price = 7 WHERE id < %s", (5,))
        cur.execute("DELETE FROM items WHERE id = %s", (8,))
    # An error.
    try:
        cur.execute("SELECT * FROM missing_table")
    except psycopg.errors.UndefinedTable:
        pass
    time.sleep(0.4)
    # COPY FROM STDIN.
    with cur.copy("COPY items (id, name) FROM STDIN") as copy:
        for i in range(100, 110):
            copy.write_row((i, "c%d" % i))
    cur.execute("SELECT count(*) FROM items")
    print(cur.fetchone()[0])
"#;

/// A cluster that logs every statement, with the schema made.
fn cluster() -> Option<Postgres> {
    let pg = Postgres::start_with(|_| "-c log_statement=all".into())?;
    let (code, _, err) = Postgres::psql(pg.addr, SCHEMA);
    assert_eq!(code, 0, "schema: {err}");
    Some(pg)
}

/// The statements a server logged (`statement: …`, `execute NAME: …`), in order.
fn statements(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("LOG:  ").map(|(_, rest)| rest))
        .filter(|rest| rest.starts_with("statement: ") || rest.starts_with("execute "))
        .map(String::from)
        .collect()
}

/// Runs `tapline replay` with `args`, the target's `--to` first.
fn replay(to: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let to = format!("postgres={to}");
    let mut all = vec![
        "replay",
        "--to",
        &to,
        "--pg-user",
        "postgres",
        "--pg-sslmode",
        "disable",
    ];
    all.extend_from_slice(args);
    run_tapline(&all)
}

#[test]
fn a_psycopg_workload_replays_into_a_fresh_cluster() {
    if !can_capture() || !have("tcpdump") || !have_psycopg() {
        return;
    }
    let Some(original) = cluster() else { return };
    let Some(fresh) = cluster() else { return };
    let dir = temp_dir();
    let pcap = dir.path().join("pg.pcap");
    let before = statements(&original.log()).len();
    record_lo(&pcap, original.addr.port(), || {
        let out = Command::new("python3")
            .args(["-c", WORKLOAD, &original.addr.port().to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "workload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "17");
    });
    let captured = statements(&original.log())[before..].to_vec();
    assert!(
        captured.len() >= 14,
        "the workload's statements: {captured:#?}"
    );

    let report = dir.path().join("report.json");
    let events = dir.path().join("events.jsonl");
    let plugin = common::write_plugin(
        dir.path(),
        "seen.lua",
        "local p = { name = \"seen\" }\n\
         function p.on_transaction(tx, flow) tap.emit{ message = \"seen\", sql = tx.sql } end\n\
         return p\n",
    );
    let fresh_before = statements(&fresh.log()).len();
    let (code, out, err) = replay(
        fresh.addr,
        &[
            "-r",
            pcap.to_str().unwrap(),
            "--speed",
            "max",
            "--report",
            report.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
            "--fail-on-diff",
            "--plugin",
            plugin.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "replay: {out}\n{err}");
    std::thread::sleep(Duration::from_millis(300));
    let replayed = statements(&fresh.log())[fresh_before..].to_vec();
    assert_eq!(
        replayed, captured,
        "the fresh server ran what the capture shows"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["different"], 0, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(r["same"].as_u64().unwrap() >= 14, "{r:#}");
    assert!(
        r["elapsed_ms"].as_f64().unwrap() < r["captured_span_ms"].as_f64().unwrap(),
        "--speed max is faster than the capture: {r:#}"
    );
    // The replayed statements went through the pipeline as replay-mode transactions.
    let events = json_lines(&events);
    let txs: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "transaction" && e["mode"] == "replay")
        .collect();
    assert!(
        txs.iter().any(|t| t["error_code"] == "42P01"),
        "the error replayed: {txs:#?}"
    );
    let seen = events
        .iter()
        .filter(|e| e["kind"] == "record" && e["message"] == "seen")
        .count();
    assert_eq!(
        seen,
        txs.len(),
        "a Lua plugin saw every replayed transaction"
    );
    assert!(
        txs.iter().any(|t| t["tag"] == "COPY 10"),
        "the COPY replayed: {txs:#?}"
    );
    assert!(
        txs.iter().any(|t| t["params"]
            .as_array()
            .is_some_and(|p| p.iter().any(|v| v.is_null()))),
        "the NULL parameter replayed: {txs:#?}"
    );
    let (code, rows, _) = Postgres::psql(fresh.addr, "SELECT count(*), count(data) FROM items");
    assert_eq!(code, 0);
    assert!(rows.contains("17 |     1"), "{rows}");

    // Bisection: the first three units only, and the units whose SQL matches.
    let (code, out, err) = replay(
        fresh.addr,
        &[
            "-r",
            pcap.to_str().unwrap(),
            "--speed",
            "max",
            "--limit",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replay: 3 exchanges"), "{out}");
    let (code, out, err) = replay(
        fresh.addr,
        &[
            "-r",
            pcap.to_str().unwrap(),
            "--speed",
            "max",
            "--filter-sql",
            "missing_table",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replay: 1 exchanges") && out.contains("1 same"),
        "{out}"
    );
}

#[test]
fn bad_postgres_inputs_say_so_in_one_line() {
    let Some(pg) = Postgres::start_with(|dir| {
        let hba = dir.join("hba.conf");
        std::fs::write(
            &hba,
            "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        format!(
            "-c hba_file={} -c password_encryption=scram-sha-256",
            hba.display()
        )
    }) else {
        return;
    };
    let (code, _, err) = Postgres::psql(pg.addr, "CREATE ROLE replayer LOGIN PASSWORD 'secret'");
    assert_eq!(code, 0, "{err}");
    let dir = temp_dir();
    // A capture of one simple query, written by hand as JSON lines has no PostgreSQL: use
    // an HTTP-only HAR to show "no replayable traffic".
    let har = dir.path().join("only-http.har");
    std::fs::write(
        &har,
        r#"{"log":{"version":"1.2","entries":[{"startedDateTime":"2026-01-01T00:00:00Z","time":1,
           "request":{"method":"GET","url":"http://h/","httpVersion":"HTTP/1.1","headers":[]},
           "response":{"status":200,"bodySize":0}}]}}"#,
    )
    .unwrap();
    let (code, _, err) = replay(pg.addr, &["-r", har.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing to replay") && err.lines().count() <= 2,
        "{err}"
    );

    // The logins need a capture with a session in it: a trivial one from a psql run.
    let pcap = dir.path().join("one.pcap");
    if can_capture() && have("tcpdump") {
        record_lo(&pcap, pg.addr.port(), || {
            assert_eq!(Postgres::psql(pg.addr, "SELECT 1").0, 0);
        });
        let p = pcap.to_str().unwrap();
        let refused = format!("postgres=127.0.0.1:{}", common::free_port());
        let (code, _, err) =
            run_tapline(&["replay", "-r", p, "--to", &refused, "--pg-user", "postgres"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("refused"), "{err}");
        let (code, _, err) = replay(pg.addr, &["-r", p, "--pg-user", "nobody"]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("asks for a password"),
            "no password to give: {err}"
        );
        let wrong = dir.path().join("wrong");
        std::fs::write(&wrong, "nope\n").unwrap();
        let w = wrong.to_str().unwrap();
        let (code, _, err) = replay(
            pg.addr,
            &["-r", p, "--pg-user", "replayer", "--pg-password-file", w],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("28P01") && !err.contains("panicked"), "{err}");
        let right = dir.path().join("right");
        std::fs::write(&right, "secret\n").unwrap();
        let r = right.to_str().unwrap();
        let (code, out, err) = replay(
            pg.addr,
            &[
                "-r",
                p,
                "--pg-user",
                "replayer",
                "--pg-database",
                "postgres",
                "--pg-password-file",
                r,
            ],
        );
        assert_eq!(code, 0, "SCRAM-SHA-256 logs in: {out}{err}");
        assert!(out.contains("1 same"), "{out}");
    }
    // A --to protocol tapline does not speak is a usage error.
    let (code, _, err) = run_tapline(&["replay", "-r", "x.pcap", "--to", "ftp=127.0.0.1:21"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--to ftp=127.0.0.1:21"), "{err}");
}
