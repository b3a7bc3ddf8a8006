//! Human text and JSON lines from real proxy runs: the default human lines for HTTP and SQL,
//! `--json` on stdout, `--output` to a file beside human stdout, and end-of-run stats.

mod common;

use std::time::Duration;

use common::{
    demo, free_port, http_get_via, json_lines, local, proxy, start_mapping, temp_dir, Postgres,
};

/// True when `line` is `http CLIENT GET URL → 200 OK N.N ms 10 B`.
fn is_http_line(line: &str, url: &str) -> bool {
    let Some(rest) = line.strip_prefix("http 127.0.0.1:") else {
        return false;
    };
    let Some((port, rest)) = rest.split_once(' ') else {
        return false;
    };
    let Some(latency) = rest
        .strip_prefix(&format!("GET {url} → 200 OK "))
        .and_then(|r| r.strip_suffix(" ms 10 B"))
    else {
        return false;
    };
    port.parse::<u16>().is_ok() && latency.parse::<f64>().is_ok()
}

#[test]
fn human_lines_on_stdout_and_json_lines_in_the_output_file() {
    let (_demo, origin) = demo();
    let listen = local(free_port());
    let dir = temp_dir();
    let file = dir.path().join("events.jsonl");
    let mut p = proxy(
        &[
            "--proxy-address",
            &listen.to_string(),
            "--output",
            file.to_str().unwrap(),
        ],
        &[listen],
    );
    let url = format!("http://{origin}/bytes/10");
    for _ in 0..3 {
        assert_eq!(http_get_via(listen, &url).0, 200);
    }
    p.wait_output(" 10 B", Duration::from_secs(10));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());

    let stdout = p.stdout();
    let http: Vec<&str> = stdout.lines().filter(|l| l.starts_with("http ")).collect();
    assert_eq!(http.len(), 3, "one line per exchange:\n{stdout}");
    for line in &http {
        assert!(is_http_line(line, &url), "{line}");
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("flow http")),
        "no flow summary for HTTP flows whose exchanges were printed:\n{stdout}"
    );

    let events = json_lines(&file);
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert!(
        count("flow_start") >= 3 && count("flow_end") >= 3,
        "{events:?}"
    );
    assert_eq!(count("http_request"), 3);
    assert_eq!(count("http_response"), 3);
    for e in &events {
        assert_eq!(e["mode"], "proxy");
        let ts = e["ts"].as_str().unwrap();
        assert!(ts.len() == 27 && ts.ends_with('Z'), "RFC 3339 µs UTC: {ts}");
        assert!(e["flow"].is_string() && e["client"].is_string() && e["server"].is_string());
    }
    let response = events
        .iter()
        .find(|e| e["kind"] == "http_response")
        .unwrap();
    assert_eq!(response["status"], 200);
    assert_eq!(response["body_len"], 10);
    assert_eq!(response["method"], "GET");
    assert_eq!(response["url"], url.as_str());
    assert!(response["latency_ms"].as_f64().unwrap() > 0.0);
    let end = events.iter().find(|e| e["kind"] == "flow_end").unwrap();
    for field in [
        "bytes_from_client",
        "bytes_from_server",
        "packets_from_client",
        "packets_from_server",
        "duration_ms",
        "end",
    ] {
        assert!(!end[field].is_null(), "flow_end has {field}: {end}");
    }

    let stderr = p.stderr();
    assert!(
        stderr.contains("tapline: events: flow_start ") && stderr.contains("http_request 3"),
        "end-of-run stats:\n{stderr}"
    );
}

#[test]
fn json_on_stdout_is_one_object_per_line() {
    let (_demo, origin) = demo();
    let listen = local(free_port());
    let mut p = proxy(
        &["--proxy-address", &listen.to_string(), "--json"],
        &[listen],
    );
    let url = format!("http://{origin}/bytes/10");
    assert_eq!(http_get_via(listen, &url).0, 200);
    p.wait_output("\"kind\":\"flow_end\"", Duration::from_secs(10));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let stdout = p.stdout();
    assert!(stdout.ends_with('\n'));
    let kinds: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            v["kind"].as_str().unwrap().to_string()
        })
        .collect();
    for kind in ["flow_start", "http_request", "http_response", "flow_end"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|k| k == "chunk"),
        "chunks stay out of JSON"
    );
}

#[test]
fn sql_statements_print_outcome_rows_and_latency() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let (mut p, listen) = start_mapping("psql", pg.addr, &[]);
    let (code, _, err) = Postgres::psql(listen, "SELECT 1 AS one");
    assert_eq!(code, 0, "{err}");
    let (_, _, err) = Postgres::psql(listen, "SELECT * FROM no_such_table");
    assert!(err.contains("no_such_table"), "{err}");
    p.wait_output("42P01", Duration::from_secs(10));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let stdout = p.stdout();
    let pg_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("pg ")).collect();
    let select = pg_lines
        .iter()
        .find(|l| l.ends_with("  SELECT 1 AS one"))
        .unwrap_or_else(|| panic!("a line for the SELECT:\n{stdout}"));
    assert!(select.contains(" SELECT 1 row "), "{select}");
    assert!(select.contains(" ms  "), "{select}");
    let error = pg_lines
        .iter()
        .find(|l| l.contains("no_such_table"))
        .unwrap_or_else(|| panic!("a line for the failed statement:\n{stdout}"));
    assert!(error.contains(" ERROR 42P01 "), "{error}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("flow postgres 127.0.0.1:") && l.ends_with(" fin")),
        "a summary of the psql session:\n{stdout}"
    );
}

#[test]
fn bad_output_options_are_one_line_usage_errors() {
    let port = free_port().to_string();
    for (args, needle) in [
        (
            vec!["--output", "/nonexistent-dir/events.jsonl"],
            "--output /nonexistent-dir/events.jsonl",
        ),
        (
            vec!["-w", "/nonexistent-dir/proxy.pcap"],
            "-w /nonexistent-dir/proxy.pcap",
        ),
        (
            vec!["--syslog", "syslog.example:514"],
            "is not udp://HOST:PORT or tcp://HOST:PORT",
        ),
        (
            vec![
                "--syslog",
                "udp://127.0.0.1:514",
                "--syslog-events",
                "flows",
            ],
            "unknown event kind 'flows'",
        ),
    ] {
        let mut all = vec!["proxy", "--proxy-address"];
        let address = format!("127.0.0.1:{port}");
        all.push(&address);
        all.extend(args);
        let (code, _, err) = common::run_tapline(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
