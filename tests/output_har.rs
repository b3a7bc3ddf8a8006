//! `--har FILE` in both modes (a HAR 1.2 log that validates against the schema kept in
//! `tests/har/`, with heads in wire order, bodies and timings) and `--json-bodies` (JSON lines
//! that carry HTTP bodies).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Validates `har` against `tests/har/har-1.2.schema.json` with Python's jsonschema.
fn assert_valid_har(har: &std::path::Path) {
    if !python_has("jsonschema") {
        return;
    }
    let schema = repo_root().join("tests/har/har-1.2.schema.json");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))); print('valid')",
        ])
        .arg(har)
        .arg(schema)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not HAR 1.2: {}",
        har.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).expect("the HAR file is JSON")
}

#[test]
fn a_proxied_session_makes_a_valid_har() {
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let har = dir.path().join("session.har");
    let (mut proxy, forward) = start_proxy(&["--har", har.to_str().unwrap()]);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-x", &format!("http://{forward}")])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    curl(&[
        &format!("http://{origin}/echo?x=1&y=two%20words"),
        "-H",
        "X-Trace: abc",
    ]);
    curl(&[
        "-d",
        "{\"order\":42}",
        "-H",
        "Content-Type: application/json",
        &format!("http://{origin}/echo"),
    ]);
    curl(&[&format!("http://{origin}/status/404")]);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));

    assert_valid_har(&har);
    let log = load(&har);
    let entries = log["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{log:#}");
    let get = &entries[0];
    assert_eq!(get["request"]["method"], "GET");
    assert_eq!(
        get["request"]["url"],
        format!("http://{origin}/echo?x=1&y=two%20words")
    );
    assert_eq!(get["request"]["queryString"][1]["value"], "two words");
    let names: Vec<&str> = get["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Host",
            "User-Agent",
            "Accept",
            "Proxy-Connection",
            "X-Trace"
        ],
        "as the client sent them: wire order and case"
    );
    assert!(get["response"]["content"]["text"]
        .as_str()
        .unwrap()
        .contains("\"x-trace\""));
    let post = &entries[1];
    assert_eq!(post["request"]["postData"]["text"], "{\"order\":42}");
    assert_eq!(post["request"]["postData"]["mimeType"], "application/json");
    assert_eq!(entries[2]["response"]["status"], 404);
    assert!(entries.iter().all(|e| e["time"].as_f64().unwrap() >= 0.0));

    // And it replays with the same outcomes, through a proxy as the session went.
    let (_again, forward) = start_proxy(&[]);
    let (code, out, err) = run_tapline(&[
        "replay",
        "-r",
        har.to_str().unwrap(),
        "--to",
        &format!("http={origin}"),
        "--via",
        &format!("http://{forward}"),
        "--speed",
        "max",
        "--fail-on-diff",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn a_capture_makes_a_valid_har_and_json_lines_can_carry_bodies() {
    let dir = temp_dir();
    let har = dir.path().join("sample.har");
    let sample = repo_root().join("samples/sample.pcap");
    let (code, stdout, stderr) = run_tapline(&[
        "capture",
        "-r",
        sample.to_str().unwrap(),
        "--json",
        "--json-bodies",
        "--har",
        har.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_valid_har(&har);
    assert_eq!(load(&har)["log"]["entries"].as_array().unwrap().len(), 7);

    let post = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "http_request" && e["method"] == "POST")
        .expect("the sample's POST");
    assert_eq!(post["body"]["text"], "{\"user\":\"ada\",\"plan\":\"pro\"}");
    assert_eq!(post["body"]["truncated"], false);

    let (_, plain, _) = run_tapline(&["capture", "-r", sample.to_str().unwrap(), "--json"]);
    assert!(
        !plain.contains("\"body\":{"),
        "bodies only with --json-bodies"
    );
}

#[test]
fn an_unwritable_har_file_is_a_usage_error() {
    let (code, _, stderr) = run_tapline(&[
        "capture",
        "-r",
        "samples/sample.pcap",
        "--har",
        "/nonexistent/dir/x.har",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--har /nonexistent/dir/x.har"), "{stderr}");
}
