//! gRPC plugins end to end: `tapline proxy` with real Python plugins, real clients (curl,
//! psql, raw sockets) and real origins (`tapline demo`, `openssl s_server`, PostgreSQL, a
//! line echo server), all on loopback.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    curl, demo, echo_server, free_port, grpc_plugin, grpc_stubs, have, http_get_via, json_lines,
    local, proxy, run_tapline, sha256_hex, start_mapping, temp_dir, tls_server, Postgres, Proc,
};
use serde_json::Value;

fn plugin_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The flags of a proxy using the plugin on `plugin_port`, plus `extra`. Calls get a generous
/// `--plugin-timeout` (unless `extra` sets one) so a loaded machine does not turn a verdict
/// into a fail-open.
fn plugin_flags(plugin_port: u16, extra: &[&str]) -> Vec<String> {
    let mut flags = vec!["--grpc-plugin".to_string(), plugin_url(plugin_port)];
    if !extra.contains(&"--plugin-timeout") {
        flags.extend(["--plugin-timeout".to_string(), "10s".to_string()]);
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

/// A forward proxy on a free port using the plugin on `plugin_port`.
fn forward_proxy(plugin_port: u16, extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = local(free_port());
    let mut args = vec!["--proxy-address".to_string(), addr.to_string()];
    args.extend(plugin_flags(plugin_port, extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (proxy(&args, &[addr]), addr)
}

/// A mapping proxy (no forward proxy) to `SCHEME://target` using the plugin on `plugin_port`.
fn mapping_proxy(
    scheme: &str,
    target: SocketAddr,
    plugin_port: u16,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let args = plugin_flags(plugin_port, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_mapping(scheme, target, &args)
}

/// A `tcp` mapping proxy to `target` using the plugin on `plugin_port`.
fn tcp_mapping(plugin_port: u16, target: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    mapping_proxy("tcp", target, plugin_port, extra)
}

/// Connects to `addr` with a read timeout.
fn dial(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads exactly `n` bytes (panics on EOF or timeout).
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn calls(record: &Path, rpc: &str) -> Vec<Value> {
    if !record.exists() {
        return Vec::new();
    }
    json_lines(record)
        .into_iter()
        .filter(|v| v["rpc"] == rpc)
        .collect()
}

/// Polls `check` until true; panics with `what` after `limit` (a safety net only).
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn echo_plugin_sees_forward_requests_responses_and_connect_tunnel_bytes() {
    let Some(stubs) = grpc_stubs() else { return };
    if !have("curl") || !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let record = dir.path().join("echo.jsonl");
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "echo_plugin.py", port, &[record.to_str().unwrap()]);
    let (_demo, origin) = demo();
    let (_tls, tls) = tls_server(dir.path());
    let (_proxy, proxy_addr) = forward_proxy(port, &[]);
    let via = format!("http://{proxy_addr}");

    let (code, body, err) = curl(&["-x", &via, &format!("http://{origin}/echo?from=curl")]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("/echo?from=curl"), "{body}");
    let (code, page, err) = curl(&["-k", "-x", &via, &format!("https://{tls}/")]);
    assert_eq!(code, 0, "the tunnel works: {err}");
    assert!(page.contains("s_server"), "{page}");

    let requests = calls(&record, "ProcessHttpRequest");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["method"], "GET");
    assert_eq!(requests[0]["path"], "/echo?from=curl");
    let host = requests[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("host"))
        .expect("Host is among the headers");
    assert_eq!(host[1], origin.to_string());
    let responses = calls(&record, "ProcessHttpResponse");
    assert_eq!(responses[0]["status"], 200);
    assert!(responses[0]["body"]
        .as_str()
        .unwrap()
        .contains("/echo?from=curl"));

    let tunnel = calls(&record, "ProcessTunnelData");
    let ingress: Vec<&Value> = tunnel
        .iter()
        .filter(|v| v["direction"] == "INGRESS")
        .collect();
    let egress: Vec<&Value> = tunnel
        .iter()
        .filter(|v| v["direction"] == "EGRESS")
        .collect();
    assert!(!ingress.is_empty() && !egress.is_empty(), "{tunnel:?}");
    // Client->server first: a TLS ClientHello (handshake record, 0x16 0x03).
    assert!(ingress[0]["chunk"]
        .as_str()
        .unwrap()
        .starts_with("\u{16}\u{3}"));
    assert!(tunnel
        .iter()
        .all(|v| v["id"] == tunnel[0]["id"] && v["side"] == "CLIENT"));
}

#[test]
fn the_lueur_guide_echo_plugin_works_unmodified() {
    let Some(stubs) = grpc_stubs() else { return };
    if !have("curl") || !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let port = free_port();
    let mut plugin = grpc_plugin(&stubs, "lueur_echo_plugin.py", port, &[]);
    let (_demo, origin) = demo();
    let (_tls, tls) = tls_server(dir.path());
    let (proxy_proc, proxy_addr) = forward_proxy(port, &[]);
    let via = format!("http://{proxy_addr}");

    let (code, body, err) = curl(&["-x", &via, &format!("http://{origin}/echo?lueur=1")]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("/echo?lueur=1"), "{body}");
    plugin.wait_output("request GET /echo?lueur=1", Duration::from_secs(10));
    plugin.wait_output("response 200", Duration::from_secs(10));

    // Its ProcessTunnelData raises on the plugin side: the tunnel must not notice.
    let (code, page, err) = curl(&["-k", "-x", &via, &format!("https://{tls}/")]);
    assert_eq!(code, 0, "fail-open keeps the tunnel working: {err}");
    assert!(page.contains("s_server"), "{page}");
    plugin.wait_output("tunnel ", Duration::from_secs(10));
    let stderr = proxy_proc.stderr();
    assert!(
        stderr.contains("ProcessTunnelData failed"),
        "the failure is reported:\n{stderr}"
    );
}

#[test]
fn postgres_plugin_sees_both_directions_of_a_psql_session() {
    let Some(stubs) = grpc_stubs() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = temp_dir();
    let record = dir.path().join("pg.jsonl");
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "pg_plugin.py", port, &[record.to_str().unwrap()]);
    let (_proxy, listen) = mapping_proxy("psql", pg.addr, port, &[]);

    let (code, out, err) =
        Postgres::psql(listen, "SELECT 'tapline-grpc' AS probe, 6 * 7 AS answer");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tapline-grpc") && out.contains("42"), "{out}");

    let chunks = calls(&record, "ProcessTunnelData");
    let text = |direction: &str| -> String {
        chunks
            .iter()
            .filter(|v| v["direction"] == direction)
            .map(|v| v["chunk"].as_str().unwrap())
            .collect()
    };
    // Declared side CLIENT (the default): client->server INGRESS, server->client EGRESS.
    assert!(
        text("INGRESS").contains("SELECT 'tapline-grpc' AS probe"),
        "the Query text reaches the plugin: {chunks:?}"
    );
    assert!(text("EGRESS").contains("tapline-grpc"), "the DataRow too");
    let parsed: Vec<String> = calls(&record, "parsed")
        .iter()
        .flat_map(|v| v["types"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    for kind in ["Q", "T", "D", "C", "Z"] {
        assert!(
            parsed.iter().any(|t| t == kind),
            "{kind} missing: {parsed:?}"
        );
    }
}

/// fault's own PostgreSQL example keys its state by `uuid.UUID(request.id)`: the tunnel id is
/// the flow's UUID, the same for every chunk of a session and the `flow_uid` of its events.
#[test]
fn a_fault_style_plugin_parses_every_tunnel_id_as_a_uuid() {
    let Some(stubs) = grpc_stubs() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = temp_dir();
    let record = dir.path().join("fault.jsonl");
    let events = dir.path().join("events.jsonl");
    let port = free_port();
    let _plugin = grpc_plugin(
        &stubs,
        "fault_pg_plugin.py",
        port,
        &[record.to_str().unwrap()],
    );
    let (mut proxy, listen) = mapping_proxy(
        "psql",
        pg.addr,
        port,
        &["--quiet", "--output", events.to_str().unwrap()],
    );
    for sql in ["SELECT 1", "SELECT repeat('x', 50000)"] {
        let (code, _, err) = Postgres::psql(listen, sql);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(proxy.stop(Duration::from_secs(20)), Some(0));

    assert!(
        calls(&record, "error").is_empty(),
        "{:?}",
        calls(&record, "error")
    );
    let chunks = calls(&record, "chunk");
    let events = json_lines(&events);
    // (The harness's readiness probe connects too: its flow carries no bytes.)
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "flow_end" && e["bytes_from_client"] != 0)
        .collect();
    assert_eq!(ends.len(), 2, "one flow per psql session");
    for end in ends {
        let uid = end["flow_uid"].as_str().unwrap();
        let of_flow: Vec<&Value> = chunks.iter().filter(|c| c["session"] == uid).collect();
        assert!(of_flow.iter().all(|c| c["version"] == 4), "{of_flow:?}");
        // Every chunk reached the plugin: its lengths add up to the flow's totals.
        let total = |direction: &str| -> u64 {
            of_flow
                .iter()
                .filter(|c| c["direction"] == direction)
                .map(|c| c["len"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(total("INGRESS"), end["bytes_from_client"].as_u64().unwrap());
        assert_eq!(total("EGRESS"), end["bytes_from_server"].as_u64().unwrap());
    }
}

#[test]
fn abort_plugin_answers_418_without_the_upstream() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "abort_plugin.py", port, &[]);
    let (_proxy, proxy_addr) = forward_proxy(port, &[]);
    // Nothing listens at the origin: only the plugin's answer can come back.
    let nowhere = local(free_port());
    let (status, body) = http_get_via(proxy_addr, &format!("http://{nowhere}/anything"));
    assert_eq!(status, 418);
    assert_eq!(body, b"short and stout\n");
}

#[test]
fn rewrite_plugin_changes_path_query_and_header() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "rewrite_plugin.py", port, &[]);
    let (_demo, origin) = demo();
    let (_proxy, proxy_addr) = forward_proxy(port, &[]);
    let (status, body) = http_get_via(proxy_addr, &format!("http://{origin}/orig?q=1"));
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/echo?rewritten=yes&was=%2Forig%3Fq%3D1");
    let headers = echo["headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "x-rewritten" && h[1] == "yes"),
        "{headers:?}"
    );
}

#[test]
fn tunnel_plugin_replaces_bytes() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "tunnel_plugin.py", port, &["replace"]);
    let (_proxy, listen) = tcp_mapping(port, echo_server(), &[]);
    let mut s = dial(listen);
    s.write_all(b"ping me\n").unwrap();
    assert_eq!(read_n(&mut s, 8), b"PING ME\n");
}

#[test]
fn tunnel_plugin_closes_the_flow() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "tunnel_plugin.py", port, &["close"]);
    let (_proxy, listen) = tcp_mapping(port, echo_server(), &[]);
    let mut s = dial(listen);
    s.write_all(b"hello\n").unwrap();
    let mut rest = Vec::new();
    // EOF or reset, and no echo: the bytes never reached the server.
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn tunnel_plugin_buffers_then_releases_bytes() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "tunnel_plugin.py", port, &["buffer"]);
    let (_proxy, listen) = tcp_mapping(port, echo_server(), &[]);
    let mut s = dial(listen);
    s.write_all(b"one\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut early = [0u8; 16];
    match s.read(&mut early) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("held bytes came through early: {other:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"two\n").unwrap();
    assert_eq!(read_n(&mut s, 8), b"one\ntwo\n");
}

#[test]
fn a_bad_grpc_plugin_url_exits_2_naming_it() {
    for bad in ["ftp://127.0.0.1:1", "http://127.0.0.1", "127.0.0.1:50051"] {
        let addr = local(free_port()).to_string();
        let (code, _, err) =
            run_tapline(&["proxy", "--proxy-address", &addr, "--grpc-plugin", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("--grpc-plugin {bad}")), "{err}");
    }
}

#[test]
fn a_plugin_down_at_start_up_is_picked_up_once_it_starts() {
    let Some(stubs) = grpc_stubs() else { return };
    let dir = temp_dir();
    let record = dir.path().join("late.jsonl");
    let port = free_port();
    let (_demo, origin) = demo();
    let (mut proxy_proc, proxy_addr) = forward_proxy(port, &[]);
    proxy_proc.wait_output("registered offline", Duration::from_secs(10));
    let url = format!("http://{origin}/echo?n=0");
    assert_eq!(
        http_get_via(proxy_addr, &url).0,
        200,
        "an offline plugin is skipped"
    );

    let _plugin = grpc_plugin(&stubs, "echo_plugin.py", port, &[record.to_str().unwrap()]);
    proxy_proc.wait_output("is answering: enabled", Duration::from_secs(20));
    assert_eq!(
        http_get_via(proxy_addr, &format!("http://{origin}/echo?n=1")).0,
        200
    );
    let requests = calls(&record, "ProcessHttpRequest");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["path"], "/echo?n=1");
}

#[test]
fn killing_a_plugin_mid_traffic_fails_no_request_and_it_is_re_enabled() {
    let Some(stubs) = grpc_stubs() else { return };
    let dir = temp_dir();
    let (first, second) = (dir.path().join("1.jsonl"), dir.path().join("2.jsonl"));
    let port = free_port();
    let (_demo, origin) = demo();
    let plugin = grpc_plugin(&stubs, "echo_plugin.py", port, &[first.to_str().unwrap()]);
    let (mut proxy_proc, proxy_addr) = forward_proxy(port, &[]);
    let get = |n: usize| http_get_via(proxy_addr, &format!("http://{origin}/echo?n={n}")).0;

    for n in 0..3 {
        assert_eq!(get(n), 200);
    }
    plugin.signal("KILL");
    drop(plugin);
    for n in 3..13 {
        assert_eq!(get(n), 200, "request {n} with the plugin gone");
    }
    proxy_proc.wait_output("disabled until it answers again", Duration::from_secs(20));
    assert_eq!(calls(&first, "ProcessHttpRequest").len(), 3);

    let _back = grpc_plugin(&stubs, "echo_plugin.py", port, &[second.to_str().unwrap()]);
    let mut n = 13;
    eventually(
        "the plugin is called again",
        Duration::from_secs(20),
        || {
            assert_eq!(get(n), 200, "request {n}");
            n += 1;
            !calls(&second, "ProcessHttpRequest").is_empty()
        },
    );
    assert!(proxy_proc.stderr().contains("is answering: enabled"));
}

#[test]
fn a_plugin_past_the_timeout_does_not_stall_traffic() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "sleepy_plugin.py", port, &["30"]);
    let (_demo, origin) = demo();
    let (proxy_proc, proxy_addr) = forward_proxy(port, &["--plugin-timeout", "300ms"]);
    let started = Instant::now();
    let (status, body) = http_get_via(proxy_addr, &format!("http://{origin}/echo?slow=plugin"));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/echo?slow=plugin"));
    // Safety net only: two 5 s calls would take 10 s; the timeout cuts each to 300 ms.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        proxy_proc.stderr().contains("timed out"),
        "{}",
        proxy_proc.stderr()
    );

    let (_mapping, listen) = tcp_mapping(port, echo_server(), &["--plugin-timeout", "300ms"]);
    let mut s = dial(listen);
    s.write_all(b"still flowing\n").unwrap();
    assert_eq!(read_n(&mut s, 14), b"still flowing\n");
}

#[test]
fn plugin_failure_closed_closes_the_flow_instead() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "sleepy_plugin.py", port, &["30"]);
    let (_demo, origin) = demo();
    let closed = ["--plugin-timeout", "300ms", "--plugin-failure", "closed"];
    let (_proxy, proxy_addr) = forward_proxy(port, &closed);
    let mut s = dial(proxy_addr);
    write!(
        s,
        "GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("/echo"),
        "the request must not reach the origin: {}",
        String::from_utf8_lossy(&answer)
    );

    let (_mapping, listen) = tcp_mapping(port, echo_server(), &closed);
    let mut s = dial(listen);
    s.write_all(b"hello\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed, no echo: {rest:?}");
}

/// The stubs directory with examples/grpc's plugins copied in (once), as its README has
/// users do.
fn examples_dir() -> Option<std::path::PathBuf> {
    static COPIED: std::sync::Once = std::sync::Once::new();
    let stubs = grpc_stubs()?;
    COPIED.call_once(|| {
        for name in ["echo.py", "postgres.py"] {
            std::fs::copy(
                common::repo_root().join("examples/grpc").join(name),
                stubs.join(name),
            )
            .unwrap();
        }
    });
    Some(stubs)
}

#[test]
fn the_example_echo_plugin_prints_requests_and_responses() {
    let Some(dir) = examples_dir() else { return };
    let port = free_port();
    let mut plugin = grpc_plugin(&dir, "echo.py", port, &[]);
    let (_demo, origin) = demo();
    let (_proxy, proxy_addr) = forward_proxy(port, &[]);
    let (status, _) = http_get_via(proxy_addr, &format!("http://{origin}/echo?example=1"));
    assert_eq!(status, 200);
    plugin.wait_output(
        &format!("request  GET {origin}/echo?example=1"),
        Duration::from_secs(10),
    );
    plugin.wait_output("response 200", Duration::from_secs(10));
}

#[test]
fn the_example_postgres_plugin_decodes_a_psql_session() {
    let Some(dir) = examples_dir() else { return };
    let Some(pg) = Postgres::start() else { return };
    let port = free_port();
    let mut plugin = grpc_plugin(&dir, "postgres.py", port, &[]);
    let (_proxy, listen) = mapping_proxy("psql", pg.addr, port, &[]);
    let (code, _, err) = Postgres::psql(listen, "SELECT 'example' AS word");
    assert_eq!(code, 0, "{err}");
    for line in [
        "client: StartupMessage",
        "client: Query: SELECT 'example' AS word",
        "server: RowDescription: word",
        "server: DataRow: ['example']",
        "server: CommandComplete: SELECT 1",
        "server: ReadyForQuery",
    ] {
        plugin.wait_output(line, Duration::from_secs(10));
    }
}

/// tapline's `ProcessMessage` extension: the example `sql_faults.py` plugin (which sets
/// `can_handle_messages`) fails the matching statement with its SQLSTATE; the others of the
/// session succeed and the server never sees the failed one.
#[test]
fn a_message_plugin_fails_the_matching_statement_only() {
    let Some(stubs) = grpc_stubs() else { return };
    let Some(pg) = Postgres::start_with(|_| "-c log_statement=all".into()) else {
        return;
    };
    std::fs::copy(
        common::repo_root().join("examples/grpc/sql_faults.py"),
        stubs.join("sql_faults.py"),
    )
    .unwrap();
    let port = free_port();
    let mut plugin = grpc_plugin(&stubs, "sql_faults.py", port, &["orders_fail", "40P01"]);
    let (_proxy, listen) = mapping_proxy("psql", pg.addr, port, &[]);
    let (_, out, err) = Postgres::psql(listen, "select 'orders_fail'");
    assert!(
        err.contains("rehearsed failure 40P01 (sql-faults plugin)"),
        "{out}{err}"
    );
    let (code, out, err) = Postgres::psql(listen, "select 'fine' as answer");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fine"), "{out}");
    assert!(!pg.log().contains("orders_fail"), "the server never saw it");
    plugin.stop(Duration::from_secs(5));
    assert!(
        plugin.stdout().contains("injecting 40P01 #1"),
        "{}",
        plugin.stdout()
    );
}

#[test]
fn a_pass_through_plugin_carries_every_byte_of_concurrent_bulk_flows() {
    let Some(stubs) = grpc_stubs() else {
        return;
    };
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, "noop_plugin.py", port, &[]);
    let echo = echo_server();
    let (_proxy, mapping) = tcp_mapping(port, echo, &[]);
    // Four flows at once, 16 MiB each way, in uneven writes: what comes back is what went.
    let flows: Vec<_> = (0..4u8)
        .map(|n| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..16usize << 20)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n))
                    .collect();
                let mut s = dial(mapping);
                let mut reader = s.try_clone().unwrap();
                let expected = sha256_hex(&data);
                let back = std::thread::spawn(move || read_n(&mut reader, 16 << 20));
                for piece in data.chunks(1000 + usize::from(n) * 777) {
                    s.write_all(piece).unwrap();
                }
                let got = back.join().unwrap();
                assert_eq!(sha256_hex(&got), expected, "flow {n}: bytes changed");
            })
        })
        .collect();
    for f in flows {
        f.join().unwrap();
    }
}
