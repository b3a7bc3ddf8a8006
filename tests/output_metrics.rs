//! `--metrics` end to end: curl fetches the exposition from a running proxy, Python's
//! prometheus_client parses it (so it is valid), and the counters match the traffic sent and
//! the events the run wrote.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    curl_ok, demo, free_port, have, http_get_via, in_ci, json_lines, local, proxy, temp_dir,
};
use serde_json::Value;

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": s.value})
print(json.dumps(samples))
"#;

const PLUGIN: &str = r#"
local p = { name = "counter" }
function p.on_request(req) end
function p.on_response(resp) end
return p
"#;

fn have_prometheus_client() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!in_ci(), "python prometheus-client missing in CI");
        eprintln!(
            "SKIP: python3 prometheus_client is not installed (pip install prometheus-client)"
        );
    }
    ok
}

/// The samples of the exposition, parsed by prometheus_client (which fails on bad text).
fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn metrics_are_valid_and_match_the_traffic() {
    if !have("curl") || !have_prometheus_client() {
        return;
    }
    let (_demo, origin) = demo();
    let listen = local(free_port());
    let metrics_port = free_port();
    let dir = temp_dir();
    let events_file = dir.path().join("events.jsonl");
    let plugin = dir.path().join("counter.lua");
    std::fs::write(&plugin, PLUGIN).unwrap();
    let mut p = proxy(
        &[
            "--proxy-address",
            &listen.to_string(),
            "--plugin",
            plugin.to_str().unwrap(),
            "--metrics",
            &metrics_port.to_string(),
            "--output",
            events_file.to_str().unwrap(),
            "--quiet",
        ],
        &[listen, local(metrics_port)],
    );
    const REQUESTS: usize = 4;
    for _ in 0..REQUESTS {
        assert_eq!(
            http_get_via(listen, &format!("http://{origin}/bytes/10")).0,
            200
        );
    }
    // Wait until every flow has ended (the events file shows it), then read the metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = json_lines(&events_file);
        let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count();
        if count("flow_end") == count("flow_start") && count("http_response") == REQUESTS {
            break events;
        }
        assert!(Instant::now() < deadline, "flows did not end: {events:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let samples = parse(&curl_ok(&[&format!(
        "http://127.0.0.1:{metrics_port}/metrics"
    )]));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());

    let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count() as f64;
    let http = [("mode", "proxy"), ("protocol", "http")];
    assert_eq!(
        value(&samples, "tapline_flows_started_total", &http),
        count("flow_start")
    );
    assert_eq!(
        value(&samples, "tapline_flows_ended_total", &http),
        count("flow_end")
    );
    assert!(count("flow_start") >= REQUESTS as f64);
    for kind in ["http_request", "http_response"] {
        assert_eq!(
            value(&samples, "tapline_events_total", &[("kind", kind)]),
            REQUESTS as f64
        );
    }
    let from_server: f64 = events
        .iter()
        .filter(|e| e["kind"] == "flow_end")
        .map(|e| e["bytes_from_server"].as_f64().unwrap())
        .sum();
    assert_eq!(
        value(
            &samples,
            "tapline_flow_bytes_total",
            &[
                ("mode", "proxy"),
                ("protocol", "http"),
                ("direction", "from_server")
            ]
        ),
        from_server
    );
    let stage = [("stage", "counter"), ("index", "0")];
    assert!(
        value(&samples, "tapline_plugin_calls_total", &stage) >= 2.0 * REQUESTS as f64,
        "a request and a response hook per exchange"
    );
    assert_eq!(value(&samples, "tapline_plugin_errors_total", &stage), 0.0);
    assert!(
        samples
            .iter()
            .any(|s| s["family"] == "tapline_plugin_call_duration_seconds"
                && s["type"] == "histogram"
                && s["labels"]["le"] == "+Inf"),
        "a histogram per stage"
    );
    assert!(
        value(
            &samples,
            "tapline_plugin_call_duration_seconds_count",
            &stage
        ) >= 2.0 * REQUESTS as f64,
        "every hook call is observed in the latency histogram"
    );
}

#[test]
fn live_capture_counters_show_in_metrics() {
    if !have("curl") || !have_prometheus_client() {
        return;
    }
    let (_demo, origin) = demo();
    let metrics_port = free_port();
    let metrics = local(metrics_port);
    let mut cmd = common::tapline();
    cmd.args([
        "capture",
        "-i",
        "lo",
        "--quiet",
        "--metrics",
        &metrics_port.to_string(),
    ])
    .args(["tcp", "port", &origin.port().to_string()]);
    let mut capture = common::Proc::spawn("tapline capture", cmd);
    capture.wait_port(metrics, Duration::from_secs(20));
    capture.wait_output("listening on lo", Duration::from_secs(20));
    for _ in 0..3 {
        curl_ok(&[&format!("http://{origin}/bytes/100")]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = parse(&curl_ok(&[&format!("http://{metrics}/metrics")]));
        let packets = value(&samples, "tapline_capture_packets_total", &[]);
        let dropped = value(&samples, "tapline_capture_dropped_packets_total", &[]);
        if packets >= 3.0 * 6.0 {
            assert_eq!(dropped, 0.0, "no kernel drops for a few loopback packets");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "capture packets stayed at {packets}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        capture.stop(Duration::from_secs(15)),
        Some(0),
        "{}",
        capture.stderr()
    );
}

#[test]
fn a_bad_metrics_address_is_a_usage_error() {
    let (code, _, err) = common::run_tapline(&["proxy", "--metrics", "not-an-address"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--metrics 'not-an-address'"), "{err}");
}
