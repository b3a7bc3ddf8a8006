//! lueur's walkthrough: the echo gRPC plugin sees every forward-proxy request and response,
//! and both directions of a CONNECT tunnel, while a 300 ms latency fault applies.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    connect_tunnel, demo, free_port, grpc_plugin, grpc_stubs, http_get_via, json_lines,
    start_proxy, temp_dir,
};

/// One HTTP exchange through a CONNECT tunnel to `origin`; returns the response and the time.
fn through_tunnel(proxy: SocketAddr, origin: SocketAddr, path: &str) -> (String, Duration) {
    let start = Instant::now();
    let mut s = connect_tunnel(proxy, origin);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    (answer, start.elapsed())
}

#[test]
fn the_echo_plugin_sees_every_request_while_a_300ms_latency_applies() {
    let Some(stubs) = grpc_stubs() else { return };
    let dir = temp_dir();
    let record = dir.path().join("calls.jsonl");
    let plugin_port = free_port();
    let _plugin = grpc_plugin(
        &stubs,
        "echo_plugin.py",
        plugin_port,
        &[record.to_str().unwrap()],
    );
    let (_demo, origin) = demo();
    let (_proxy, proxy_addr) = start_proxy(&[
        "--grpc-plugin",
        &format!("http://127.0.0.1:{plugin_port}"),
        "--with-latency",
        "--latency-mean",
        "300",
    ]);

    let n = 5;
    for i in 0..n {
        let start = Instant::now();
        let (status, body) = http_get_via(proxy_addr, &format!("http://{origin}/status/200?n={i}"));
        assert_eq!((status, &body[..]), (200, &b"200 OK\n"[..]));
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "request {i} took {:?}",
            start.elapsed()
        );
    }
    let (answer, took) = through_tunnel(proxy_addr, origin, "/bytes/16");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Once per connection and direction: the client's first bytes and the server's first.
    assert!(took >= Duration::from_millis(600), "tunnel took {took:?}");

    let calls = json_lines(&record);
    let rpc = |name: &'static str| calls.iter().filter(move |c| c["rpc"] == name);
    let paths: Vec<&str> = rpc("ProcessHttpRequest")
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("/status/200?n={i}")).collect();
    assert_eq!(paths, expected);
    assert_eq!(rpc("ProcessHttpResponse").count(), n);
    assert!(rpc("ProcessHttpResponse").all(|c| c["status"] == 200));
    let tunnel: String = rpc("ProcessTunnelData")
        .map(|c| c["chunk"].as_str().unwrap())
        .collect();
    assert!(tunnel.contains("GET /bytes/16 HTTP/1.1"), "{tunnel}");
    assert!(tunnel.contains("HTTP/1.1 200"), "{tunnel}");
}
