//! Verdicts on PostgreSQL messages through a `psql` mapping, against a real server with
//! psql and psycopg: a Lua `on_message` answers chosen statements with an error the server
//! never sees (simple and extended protocol, inside a transaction block), edits result
//! values, closes a session at a statement; transactions say what was injected.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::{
    have_psycopg, json_lines, psql_session, start_mapping, temp_dir, write_plugin, Postgres,
};

/// Fails every statement naming `orders_fail` with 40001, every second execution of a
/// prepared statement naming `flaky` with 40P01, closes the session at `crash_here`, and
/// rewrites the value `secret` in results.
const PLUGIN: &str = r#"
local p = { name = "rehearse" }
local flaky = 0
function p.on_message(msg, flow)
  local sql = msg.fields.sql
  if (msg.type == "Query" or msg.type == "Bind") and sql then
    if sql:find("orders_fail", 1, true) then
      return tap.pg_error{code = "40001", message = "rehearsed serialization failure"}
    end
    if sql:find("crash_here", 1, true) then
      return tap.close("rehearsed crash")
    end
    if msg.type == "Bind" and sql:find("flaky", 1, true) then
      flaky = flaky + 1
      if flaky % 2 == 0 then
        return tap.pg_error{code = "40P01", message = "rehearsed deadlock", severity = "error"}
      end
    end
  end
  if msg.type == "DataRow" and msg.fields.values[1] == "secret" then
    msg.fields.values[1] = "redacted"
  end
end
return p
"#;

fn start(pg: &Postgres, dir: &Path) -> (common::Proc, SocketAddr, std::path::PathBuf) {
    let plugin = write_plugin(dir, "rehearse.lua", PLUGIN);
    let out = dir.join("events.jsonl");
    let (proxy, listen) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--plugin",
            plugin.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    (proxy, listen, out)
}

fn logging_postgres() -> Option<Postgres> {
    Postgres::start_with(|_| "-c log_statement=all".to_string())
}

#[test]
fn a_failed_statement_never_reaches_the_server_and_the_session_goes_on() {
    let Some(pg) = logging_postgres() else { return };
    let dir = temp_dir();
    let (mut proxy, listen, out) = start(&pg, dir.path());

    let (_, stdout, stderr) = psql_session(
        listen,
        &[
            "select 'before'",
            "select 'orders_fail'",
            "select 'after'",
            "select 'secret', 'kept'",
        ],
    );
    assert!(
        stderr.contains("ERROR:  rehearsed serialization failure"),
        "{stderr}"
    );
    assert!(
        stdout.contains("before") && stdout.contains("after"),
        "{stdout}"
    );
    assert!(
        stdout.contains("redacted|kept"),
        "the DataRow edit arrives: {stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");

    // In a transaction block: aborted until ROLLBACK, exactly as after a real error.
    let (_, stdout, stderr) = psql_session(
        listen,
        &[
            "begin",
            "select 'in block'",
            "select 'orders_fail'",
            "select 'ignored'",
            "rollback",
            "select 'next'",
        ],
    );
    assert!(
        stderr.contains("rehearsed serialization failure"),
        "{stderr}"
    );
    assert!(
        stderr.contains("current transaction is aborted"),
        "the server holds the aborted block (25P02): {stderr}"
    );
    assert!(stdout.contains("next"), "{stdout}");

    let log = pg.log();
    assert!(
        !log.contains("orders_fail"),
        "the server never saw it:\n{log}"
    );
    assert!(log.contains("tapline_injected_error_"), "{log}");

    proxy.stop(std::time::Duration::from_secs(10));
    let events = json_lines(&out);
    let injected: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "transaction" && e["injected"] == "sql-error")
        .collect();
    assert!(
        !injected.is_empty(),
        "transactions say what was injected: {:?}",
        events
            .iter()
            .filter(|e| e["kind"] == "transaction")
            .collect::<Vec<_>>()
    );
    for tx in &injected {
        assert_eq!(tx["error_code"], "40001", "{tx}");
        assert!(tx["sql"].as_str().unwrap().contains("orders_fail"), "{tx}");
        assert_eq!(tx["injected_by"], "lua plugin rehearse", "{tx}");
    }
}

#[test]
fn prepared_statements_fail_on_the_chosen_execution_and_the_next_one_works() {
    if !have_psycopg() {
        return;
    }
    let Some(pg) = logging_postgres() else { return };
    let dir = temp_dir();
    let (_proxy, listen, _) = start(&pg, dir.path());
    let script = format!(
        r#"
import json, psycopg
conn = psycopg.connect(host="127.0.0.1", port={port}, user="postgres", dbname="postgres",
                       sslmode="disable", autocommit=True, connect_timeout=10)
out = []
for i in range(4):
    try:
        row = conn.execute("select %s::int + 1 as flaky", (i,), prepare=True).fetchone()
        out.append(["ok", row[0]])
    except psycopg.Error as e:
        out.append(["error", e.sqlstate, str(e)])
with conn.transaction():
    try:
        with conn.transaction():
            conn.execute("select 'orders_fail' where %s", (True,))
    except psycopg.Error as e:
        out.append(["savepoint", e.sqlstate])
    out.append(["after", conn.execute("select 42").fetchone()[0]])
print(json.dumps(out))
"#,
        port = listen.port()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v[0], serde_json::json!(["ok", 1]), "{v}");
    assert_eq!(v[1][0], "error", "{v}");
    assert_eq!(v[1][1], "40P01", "{v}");
    assert!(
        v[1][2].as_str().unwrap().contains("rehearsed deadlock"),
        "{v}"
    );
    assert_eq!(
        v[2],
        serde_json::json!(["ok", 3]),
        "the next execution works: {v}"
    );
    assert_eq!(v[3][0], "error", "{v}");
    assert_eq!(v[4], serde_json::json!(["savepoint", "40001"]), "{v}");
    assert_eq!(
        v[5],
        serde_json::json!(["after", 42]),
        "a rolled-back savepoint leaves the block usable: {v}"
    );
}

#[test]
fn a_close_verdict_drops_the_session_at_that_statement() {
    let Some(pg) = logging_postgres() else { return };
    let dir = temp_dir();
    let (_proxy, listen, _) = start(&pg, dir.path());
    let (code, stdout, stderr) = psql_session(
        listen,
        &["select 'alive'", "select 'crash_here'", "select 'never'"],
    );
    assert_ne!(code, 0);
    assert!(stdout.contains("alive"), "{stdout}");
    assert!(
        stderr.contains("server closed the connection unexpectedly")
            || stderr.contains("connection to server was lost"),
        "{stderr}"
    );
    assert!(
        !pg.log().contains("crash_here"),
        "the statement never reached the server"
    );
    // Other sessions go on.
    let (code, stdout, _) = psql_session(listen, &["select 'still serving'"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("still serving"));
}
