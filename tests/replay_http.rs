//! `tapline replay` of HTTP: tcpdump records curl against one `tapline demo`; the recording
//! is replayed into a second demo (through a `tapline proxy` mapping whose `--output` shows
//! what arrived: the same methods, paths and body lengths; the report finds no difference);
//! into an origin that answers 500 for one path (a mapping with a plugin in front of a
//! demo): exactly that difference, and `--fail-on-diff` exits 1; `--via` a tapline proxy
//! that answers every request with 503: every exchange differs, and through a plain proxy
//! the requests reach the `--to` target. The HAR (`--har`) and JSON lines (`--json-bodies`)
//! tapline writes of the same capture replay with the same result as the pcap. Bad inputs: a HAR that is not JSON, a HAR with nothing in
//! it, a target that refuses, a bad `--via` or `--speed`. An `https=` target is verified
//! against `--upstream-ca`, and refused without it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    can_capture, capture, curl_ok, demo, free_port, have, json_lines, local, record_lo,
    run_tapline, start_mapping, start_proxy, temp_dir, write_plugin, Proc,
};
use serde_json::Value;

/// The request body the workload posts to `/echo`.
const POSTED: &str = "hello replay: a body that must arrive whole";

/// A plugin that makes a mapping in front of a demo an origin that answers 500 for one path.
const BROKEN_PATH: &str = r#"
local p = { name = "broken" }
function p.on_request(req)
    if req.path == "/status/404" then
        return tap.respond{ status = 500, body = "broken\n" }
    end
end
return p
"#;

/// Records curl's requests to `origin` into `file`: keep-alive GETs (a 404 and a chunked
/// answer among them), a POST with a body, a HEAD, a PUT of 20 kB.
fn record(file: &Path, origin: SocketAddr, dir: &Path) {
    record_lo(file, origin.port(), || curl_workload(origin, dir));
}

/// The requests [`record`] records.
fn curl_workload(origin: SocketAddr, dir: &Path) {
    let url = |path: &str| format!("http://{origin}{path}");
    let (a, b, c) = (url("/"), url("/status/404"), url("/chunked/3000"));
    curl_ok(&[
        "-s",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &a,
        &b,
        &c,
    ]);
    curl_ok(&[
        "-s",
        "-o",
        "/dev/null",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        POSTED,
        &url("/echo"),
    ]);
    curl_ok(&["-s", "-o", "/dev/null", "-I", &a]);
    let big = dir.join("big");
    std::fs::write(&big, "x".repeat(20_000)).unwrap();
    let upload = format!("@{}", big.display());
    curl_ok(&[
        "-s",
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "--data-binary",
        &upload,
        &url("/echo?put=1"),
    ]);
}

/// `tapline replay -r FILE --to http=TARGET --speed max --report …` plus `args`: exit code,
/// stdout, stderr, and the report.
fn replay(file: &Path, target: SocketAddr, args: &[&str]) -> (i32, String, String, Value) {
    let dir = temp_dir();
    let report = dir.path().join("report.json");
    let to = format!("http={target}");
    let mut all = vec![
        "replay",
        "-r",
        file.to_str().unwrap(),
        "--to",
        &to,
        "--speed",
        "max",
        "--report",
        report.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (code, out, err) = run_tapline(&all);
    let report = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (code, out, err, report)
}

/// (method, path, body length) of each request in events, in order.
fn requests(events: &[Value]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .filter(|e| e["kind"] == "http_request")
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["body_len"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn curl_traffic_replays_into_another_origin() {
    if !can_capture() || !have("tcpdump") || !have("curl") {
        return;
    }
    let dir = temp_dir();
    let pcap = dir.path().join("http.pcap");
    let (_origin, origin) = demo();
    record(&pcap, origin, dir.path());
    let (code, captured, err) = capture(&["-r", pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let sent = requests(&captured);
    assert_eq!(sent.len(), 6, "{sent:?}");

    // The same requests arrive at a second origin, and answer the same.
    let (_second, second) = demo();
    let arrived = dir.path().join("arrived.jsonl");
    let (mut mapping, front) = start_mapping(
        "http",
        second,
        &["--quiet", "--output", arrived.to_str().unwrap()],
    );
    let replayed = dir.path().join("replayed.jsonl");
    let (code, out, err, report) = replay(
        &pcap,
        front,
        &["--fail-on-diff", "--output", replayed.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        (report["same"].as_u64(), report["different"].as_u64()),
        (Some(6), Some(0)),
        "{report:#}"
    );
    assert!(out.contains("6 same, 0 different, 0 failed"), "{out}");
    mapping.stop(Duration::from_secs(10));
    // Connections replay at once, so only each connection's order is the captured one.
    let (mut arrived, mut sent) = (requests(&json_lines(&arrived)), sent.clone());
    arrived.sort();
    sent.sort();
    assert_eq!(arrived, sent, "what arrived is what was captured");
    let events = json_lines(&replayed);
    assert!(events
        .iter()
        .all(|e| e["mode"] == "replay" && e["route"] == "replay"));
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "transaction").count(),
        6
    );

    // tapline's own JSON lines with bodies (--json-bodies) and its own HAR (--har) replay
    // the same.
    let jsonl = dir.path().join("capture.jsonl");
    let written_har = dir.path().join("written.har");
    let (code, _, err) = run_tapline(&[
        "capture",
        "-r",
        pcap.to_str().unwrap(),
        "--quiet",
        "--output",
        jsonl.to_str().unwrap(),
        "--json-bodies",
        "--har",
        written_har.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for file in [&jsonl, &written_har] {
        let (code, out, err, report) = replay(file, second, &["--fail-on-diff"]);
        assert_eq!(code, 0, "{}: {out}\n{err}", file.display());
        assert_eq!(
            (report["same"].as_u64(), report["different"].as_u64()),
            (Some(6), Some(0)),
            "{}: {report:#}",
            file.display()
        );
    }

    // An origin that answers 500 for one path: exactly that difference.
    let plugin = write_plugin(dir.path(), "broken.lua", BROKEN_PATH);
    let (_broken, broken) = start_mapping(
        "http",
        second,
        &["--quiet", "--plugin", plugin.to_str().unwrap()],
    );
    let (code, out, err, report) = replay(&pcap, broken, &["--fail-on-diff"]);
    assert_eq!(code, 1, "--fail-on-diff: {out}\n{err}");
    assert!(err.contains("1 of 6 exchanges differ"), "{err}");
    assert_eq!(report["different"].as_u64(), Some(1), "{report:#}");
    let diff = &report["differences"][0];
    assert_eq!(diff["what"], "GET /status/404");
    assert_eq!(
        (
            diff["captured"]["status"].as_u64(),
            diff["replayed"]["status"].as_u64()
        ),
        (Some(404), Some(500))
    );
    assert!(
        out.contains("DIFFERENT") && out.contains("GET /status/404"),
        "{out}"
    );

    // Through a proxy that answers every request with 503: every exchange differs.
    let (_proxy, proxy) = start_proxy(&[
        "--with-http-response",
        "--http-response-status",
        "503",
        "--http-response-trigger-probability",
        "1",
    ]);
    let via = format!("http://{proxy}");
    let (code, out, err, report) = replay(&pcap, second, &["--via", &via]);
    assert_eq!(
        code, 0,
        "without --fail-on-diff differences are not an error: {err}"
    );
    assert_eq!(
        (report["same"].as_u64(), report["different"].as_u64()),
        (Some(0), Some(6)),
        "{out}{report:#}"
    );

    // Through a proxy without faults the requests reach the --to target (the origin with
    // the broken path), not the captured Host (the first origin, which answers as captured).
    let (_plain, plain) = start_proxy(&[]);
    let via = format!("http://{plain}");
    let (code, out, err, report) = replay(&pcap, broken, &["--via", &via]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        (report["same"].as_u64(), report["different"].as_u64()),
        (Some(5), Some(1)),
        "{out}{report:#}"
    );
}

#[test]
fn bad_http_inputs_say_so_in_one_line() {
    let dir = temp_dir();
    let not_json = dir.path().join("broken.har");
    std::fs::write(&not_json, "<html>not a HAR</html>").unwrap();
    let (code, _, err, _) = replay(&not_json, local(80), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a HAR") && err.lines().count() == 1,
        "{err}"
    );

    let empty = dir.path().join("empty.har");
    std::fs::write(&empty, r#"{"log":{"version":"1.2","entries":[]}}"#).unwrap();
    let (code, _, err, _) = replay(&empty, local(80), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing to replay"), "{err}");

    let one = dir.path().join("one.har");
    std::fs::write(
        &one,
        r#"{"log":{"version":"1.2","entries":[{"startedDateTime":"2026-01-01T00:00:00Z",
           "request":{"method":"GET","url":"http://h/","headers":[]},"response":{"status":200}}]}}"#,
    )
    .unwrap();
    let (code, _, err, _) = replay(&one, local(free_port()), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused") && !err.contains("panicked"),
        "{err}"
    );

    let (code, _, err, _) = replay(&one, local(80), &["--via", "socks5://h:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--via"), "{err}");
    let (code, _, err, _) = replay(&one, local(80), &["--speed", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--speed"), "{err}");
}

#[test]
fn https_targets_are_verified() {
    if !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let pki = common::test_pki(dir.path(), "DNS:localhost,IP:127.0.0.1");
    let server = local(free_port());
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-www", "-accept", &server.to_string(), "-cert"])
        .arg(&pki.cert)
        .arg("-key")
        .arg(&pki.key);
    let mut s_server = Proc::spawn("openssl s_server", cmd);
    s_server.wait_output("ACCEPT", Duration::from_secs(20));
    let har = dir.path().join("one.har");
    std::fs::write(
        &har,
        r#"{"log":{"version":"1.2","entries":[{"startedDateTime":"2026-01-01T00:00:00Z",
           "request":{"method":"GET","url":"https://localhost/","headers":[]},
           "response":{"status":200,"bodySize":-1}}]}}"#,
    )
    .unwrap();
    let to = format!("https={server}");
    let events = dir.path().join("events.jsonl");
    let cert = &pki.ca;
    let (code, out, err) = run_tapline(&[
        "replay",
        "-r",
        har.to_str().unwrap(),
        "--to",
        &to,
        "--host",
        "localhost",
        "--upstream-ca",
        cert.to_str().unwrap(),
        "--output",
        events.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let events = json_lines(&events);
    let tx = events
        .iter()
        .find(|e| e["kind"] == "transaction")
        .expect("a transaction");
    assert_eq!(tx["response"]["status"], 200, "{tx:#}");
    assert!(
        tx["tls"]["server"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{tx:#}"
    );

    // Without the CA the certificate is refused, in one line.
    let (code, _, err) = run_tapline(&[
        "replay",
        "-r",
        har.to_str().unwrap(),
        "--to",
        &to,
        "--host",
        "localhost",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("TLS with localhost") && !err.contains("panicked"),
        "{err}"
    );
}
