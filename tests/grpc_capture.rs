//! gRPC plugins in capture mode: `tapline capture -r` of the shared captures hands decoded
//! HTTP messages and stream chunks to real Python plugins, observe-only, in order.

mod common;

use common::{free_port, grpc_plugin, grpc_stubs, json_lines, run_tapline, shared_pcaps, temp_dir};
use serde_json::Value;

fn capture_with_plugin(script: &str, pcap: &str) -> Option<Vec<Value>> {
    let stubs = grpc_stubs()?;
    let pcaps = shared_pcaps()?;
    let dir = temp_dir();
    let record = dir.path().join("calls.jsonl");
    let port = free_port();
    let _plugin = grpc_plugin(&stubs, script, port, &[record.to_str().unwrap()]);
    let (code, _, err) = run_tapline(&[
        "capture",
        "-r",
        pcaps.join(pcap).to_str().unwrap(),
        "--grpc-plugin",
        &format!("http://127.0.0.1:{port}"),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    Some(json_lines(&record))
}

#[test]
fn echo_plugin_observes_captured_http_in_order() {
    let Some(calls) = capture_with_plugin("echo_plugin.py", "http-keepalive-5-gets.pcap") else {
        return;
    };
    let paths: Vec<&str> = calls
        .iter()
        .filter(|c| c["rpc"] == "ProcessHttpRequest")
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(paths.contains(&"/style/enhanced.css"), "{paths:?}");
    let statuses: Vec<&Value> = calls
        .iter()
        .filter(|c| c["rpc"] == "ProcessHttpResponse")
        .map(|c| &c["status"])
        .collect();
    assert_eq!(statuses.len(), 5);
    assert!(statuses.iter().all(|s| **s == 200));
    let chunks: Vec<&Value> = calls
        .iter()
        .filter(|c| c["rpc"] == "ProcessTunnelData")
        .collect();
    assert!(chunks.iter().any(|c| c["direction"] == "INGRESS"));
    assert!(chunks.iter().any(|c| c["direction"] == "EGRESS"));
    // The first client chunk is the first request, as on the wire.
    let first = chunks.iter().find(|c| c["direction"] == "INGRESS").unwrap();
    assert!(first["chunk"].as_str().unwrap().starts_with("GET "));
}

#[test]
fn postgres_plugin_observes_captured_queries() {
    let Some(calls) = capture_with_plugin("pg_plugin.py", "pgsql-simple-query-scram-errors.pcap")
    else {
        return;
    };
    let client: String = calls
        .iter()
        .filter(|c| c["rpc"] == "ProcessTunnelData" && c["direction"] == "INGRESS")
        .map(|c| c["chunk"].as_str().unwrap())
        .collect();
    assert!(client.contains("DELETE FROM new_table"), "{client}");
    assert!(calls
        .iter()
        .any(|c| c["rpc"] == "ProcessTunnelData" && c["direction"] == "EGRESS"));
}
