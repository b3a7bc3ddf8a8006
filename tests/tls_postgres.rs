//! PostgreSQL over SSL through an intercepted `psql` mapping: a real server with `ssl=on`
//! (its certificate from a CA the test makes with openssl), psql with `sslmode=verify-full`
//! trusting tapline's CA, a Lua plugin reading the decrypted messages, and the server's log
//! saying the upstream leg used SSL.
mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A CA and a server certificate for 127.0.0.1 (`server.pem`, `server.key`) in `dir`: the
/// CA file.
fn server_pki(dir: &Path) -> std::path::PathBuf {
    test_pki(dir, "IP:127.0.0.1").ca
}

/// psql against `addr` with a libpq connection string's extra words; (code, stdout, stderr).
fn psql(addr: SocketAddr, conn: &str, sql: &str) -> (i32, String, String) {
    let out = Command::new("psql")
        .arg("-X")
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10 {conn}",
            addr.port()
        ))
        .args(["-A", "-t", "-c", sql])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PLUGIN: &str = r#"
local p = { name = "pg-watch", version = "1.0" }
function p.on_message(msg, flow)
  if msg.type == "Query" then
    tap.emit{ message = "query", sql = msg.fields.sql or "", tls = flow.tls and flow.tls.intercepted or false }
  elseif msg.type == "DataRow" then
    local v = msg.fields.values and msg.fields.values[1] or ""
    tap.emit{ message = "row", value = tostring(v) }
  end
end
return p
"#;

#[test]
fn psql_with_verify_full_is_decrypted_on_both_legs() {
    if !have("openssl") {
        return;
    }
    let certs = temp_dir();
    let mut ca_file = None;
    let Some(pg) = Postgres::start_with(|dir| {
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).unwrap();
        ca_file = Some(server_pki(&pki));
        format!(
            "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key -c log_connections=on",
            pki.display()
        )
    }) else {
        return;
    };
    let pg_ca = certs.path().join("pg-ca.pem");
    fs::copy(ca_file.unwrap(), &pg_ca).unwrap();
    let dir = temp_dir();
    let ca_dir = dir.path().join("ca");
    let events = dir.path().join("events.jsonl");
    let plugin = write_plugin(dir.path(), "pg.lua", PLUGIN);
    let (mut proxy, mapping) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--intercept-tls",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--upstream-ca",
            pg_ca.to_str().unwrap(),
            "--plugin",
            plugin.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
        ],
    );
    let tapline_ca = ca_dir.join("tapline-ca.pem");
    let verify = format!("sslmode=verify-full sslrootcert={}", tapline_ca.display());
    let (code, out, err) = psql(mapping, &verify, "SELECT 40 + 2 AS answer");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "42");
    let (code, out, err) = psql(mapping, "sslmode=disable", "SELECT 'plain'");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "plain");
    // A client that checks the certificate against another CA refuses tapline's.
    let (code, _, err) = psql(
        mapping,
        &format!("sslmode=verify-full sslrootcert={}", pg_ca.display()),
        "SELECT 1",
    );
    assert_ne!(code, 0, "psql must refuse a leaf it cannot verify");
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(
        proxy.stop(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.stderr()
    );

    let lines = json_lines(&events);
    let records = |m: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["kind"] == "record" && l["message"] == m)
            .map(|l| l["fields"].clone())
            .collect()
    };
    let queries = records("query");
    assert_eq!(queries[0]["sql"], "SELECT 40 + 2 AS answer", "{lines:#?}");
    assert_eq!(queries[0]["tls"], true);
    assert_eq!(queries[1]["sql"], "SELECT 'plain'");
    assert_eq!(
        queries[1]["tls"], false,
        "sslmode=disable has no client TLS"
    );
    assert!(
        records("row").iter().any(|r| r["value"] == "42"),
        "{lines:#?}"
    );
    let start = lines
        .iter()
        .find(|l| l["kind"] == "flow_start" && l["tls"]["intercepted"] == true)
        .expect("an intercepted flow");
    assert!(start["tls"]["server"]["version"]
        .as_str()
        .unwrap()
        .starts_with("TLSv1."));
    let log = pg.log();
    assert!(
        log.contains("SSL enabled"),
        "the server's log shows the upstream leg used SSL:\n{log}"
    );
}

/// PostgreSQL 17's direct SSL: a TLS hello first, ALPN `postgresql`, then the startup
/// message; here from Python's ssl module (Debian 12's libpq predates it).
const DIRECT_SSL_CLIENT: &str = r#"
import socket, ssl, struct, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["postgresql"])
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="127.0.0.1")
print("alpn", t.selected_alpn_protocol())
params = b"user\0postgres\0database\0postgres\0\0"
t.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
def messages():
    buf = b""
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
            more = t.recv(65536)
            if not more:
                return
            buf += more
        n = 1 + struct.unpack("!i", buf[1:5])[0]
        yield buf[0:1], buf[5:n]
        buf = buf[n:]
m = messages()
for tag, body in m:
    if tag == b"Z":
        break
q = b"SELECT 6 * 7\0"
t.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
for tag, body in m:
    if tag == b"D":
        (length,) = struct.unpack("!i", body[2:6])
        print("row", body[6:6 + length].decode())
    if tag == b"Z":
        break
t.sendall(b"X" + struct.pack("!i", 4))
"#;

#[test]
fn direct_ssl_with_alpn_postgresql_is_intercepted_too() {
    if !have("openssl") {
        return;
    }
    let Some(pg) = Postgres::start_with(|dir| {
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).unwrap();
        server_pki(&pki);
        format!(
            "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
            pki.display()
        )
    }) else {
        return;
    };
    let dir = temp_dir();
    let ca_dir = dir.path().join("ca");
    let events = dir.path().join("events.jsonl");
    let (mut proxy, mapping) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--intercept-tls",
            "--upstream-insecure",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
        ],
    );
    let out = Command::new("python3")
        .args(["-c", DIRECT_SSL_CLIENT])
        .arg(mapping.port().to_string())
        .arg(ca_dir.join("tapline-ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["alpn postgresql", "row 42"]
    );
    assert_eq!(proxy.stop(Duration::from_secs(15)), Some(0));
    let lines = json_lines(&events);
    let tx = lines
        .iter()
        .find(|l| l["kind"] == "transaction")
        .expect("the query's transaction");
    assert_eq!(tx["sql"], "SELECT 6 * 7", "{tx}");
    assert_eq!(tx["tls"]["client"]["alpn"], "postgresql");
}
