//! Faults through a real `tapline proxy` in front of `tapline demo`: HTTP errors, blackholes and
//! bandwidth as a client sees them, and bad fault flags. (Latency distributions are measured
//! in `faults_latency.rs`, alone, to keep timing noise down.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{
    demo, free_port, http_get_via, local, run_tapline, sha256_hex, start_mapping, start_proxy,
};

#[test]
fn http_errors_answer_a_binomial_share_of_requests() {
    let (_demo, origin) = demo();
    let mapped = local(free_port());
    let mapping = format!("{}=http://{origin}", mapped.port());
    let (mut p, proxy) = start_proxy(&[
        "--proxy",
        &mapping,
        "--with-http-response",
        "--http-response-status",
        "503",
        "--http-response-body",
        "try later",
        "--http-response-trigger-probability",
        "0.3",
    ]);
    p.wait_port(mapped, Duration::from_secs(20));
    let url = format!("http://{origin}/status/200");
    // Half through the forward proxy, half through the HTTP mapping.
    let n = 300;
    let mut errors = [0, 0];
    for i in 0..n {
        match http_get_via([proxy, mapped][i % 2], &url) {
            (200, _) => {}
            (503, body) => {
                assert_eq!(body, b"try later");
                errors[i % 2] += 1;
            }
            (status, _) => panic!("unexpected status {status}"),
        }
    }
    // Binomial(300, 0.3): mean 90, sd 7.9; allow 4 sd. Each route: Binomial(150, 0.3), mean 45.
    let total = errors[0] + errors[1];
    assert!((total as f64 - 90.0).abs() < 4.0 * 7.94, "{total} errors");
    assert!(
        errors.iter().all(|e| *e >= 20),
        "errors per route {errors:?}"
    );
}

#[test]
fn an_http_error_aimed_at_a_route_hits_only_that_route() {
    let (_demo, origin) = demo();
    let (_p, mapped) = start_mapping(
        "http",
        origin,
        &[
            "--quiet",
            "--with-http-response",
            "--http-response-status",
            "503",
            "--http-response-match",
            "^POST /status/",
        ],
    );
    let request = |method: &str, path: &str| {
        let (got, _) = send_and_wait(
            mapped,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            Duration::from_secs(10),
        );
        let head = String::from_utf8_lossy(&got);
        head.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(request("POST", "/status/200"), "503");
    assert_eq!(
        request("post", "/status/201"),
        "503",
        "methods match case-insensitively too"
    );
    assert_ne!(request("GET", "/status/200"), "503");
    assert_ne!(request("POST", "/bytes/10"), "503");
    assert_ne!(request("PUT", "/status/200"), "503");
}

/// Sends `request` to `addr` and reads with a `wait` timeout: returns the bytes read and
/// whether the read timed out (rather than the peer closing).
fn send_and_wait(addr: SocketAddr, request: &str, wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, true)
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn a_blackhole_holds_requests_until_the_client_gives_up() {
    let (_demo, origin) = demo();
    let mapped = local(free_port());
    let mapping = format!("{}=tcp://{origin}", mapped.port());
    let (mut p, proxy) = start_proxy(&["--proxy", &mapping, "--with-blackhole"]);
    p.wait_port(mapped, Duration::from_secs(20));
    let get = format!("GET http://{origin}/status/200 HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    // Forward proxy: the request is accepted and never answered.
    let start = Instant::now();
    let (got, timed_out) = send_and_wait(proxy, &get, Duration::from_secs(2));
    assert!(timed_out && got.is_empty(), "answered: {got:?}");
    assert!(start.elapsed() >= Duration::from_secs(2));
    // TCP mapping: the connection is accepted and the server's bytes never arrive.
    let get = format!("GET /status/200 HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let (got, timed_out) = send_and_wait(mapped, &get, Duration::from_secs(2));
    assert!(timed_out && got.is_empty(), "answered: {got:?}");
    // The proxy itself is still serving.
    assert!(TcpStream::connect(proxy).is_ok());
}

/// Sends `request` to `addr` and reads the whole answer; returns its body and the time taken.
fn fetch(addr: SocketAddr, request: &str) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (got.split_off(head), start.elapsed())
}

/// Bytes per second of a 2 MB download, sent as `request` to `addr`.
fn download_rate(addr: SocketAddr, request: &str) -> f64 {
    let (body, took) = fetch(addr, request);
    assert_eq!(body.len(), 2_000_000, "incomplete body");
    body.len() as f64 / took.as_secs_f64()
}

#[test]
fn bandwidth_paces_downloads_to_the_rate() {
    let (_demo, origin) = demo();
    let mapped = local(free_port());
    let mapping = format!("{}=tcp://{origin}", mapped.port());
    let (mut p, proxy) = start_proxy(&[
        "--proxy",
        &mapping,
        "--with-bandwidth",
        "--bandwidth-rate",
        "1",
        "--bandwidth-unit",
        "MBps",
    ]);
    p.wait_port(mapped, Duration::from_secs(20));
    let over_mapping = download_rate(
        mapped,
        &format!("GET /bytes/2000000 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"),
    );
    let forward = download_rate(
        proxy,
        &format!(
            "GET http://{origin}/bytes/2000000 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        ),
    );
    for (route, rate) in [("tcp mapping", over_mapping), ("forward proxy", forward)] {
        assert!(
            (0.9e6..=1.1e6).contains(&rate),
            "{route}: {rate:.0} B/s, not 1 MB/s ± 10%"
        );
    }
}

#[test]
fn packet_loss_slows_a_stream_but_delivers_every_byte_intact() {
    let (_demo, origin) = demo();
    let (_p, mapped) = start_mapping(
        "tcp",
        origin,
        &[
            "--quiet",
            "--with-packet-loss",
            "--packet-loss-probability",
            "0.05",
        ],
    );
    let get = format!("GET /bytes/300000 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let (direct, _) = fetch(origin, &get);
    let (lossy, took) = fetch(mapped, &get);
    assert_eq!(direct.len(), 300_000);
    assert_eq!(
        sha256_hex(&lossy),
        sha256_hex(&direct),
        "the stream was altered"
    );
    // About 200 segments lost with p = 0.05 each: no loss at all has odds of 3e-5, and one
    // loss costs a 200 ms retransmission timeout.
    assert!(took >= Duration::from_millis(200), "took {took:?}");
}

#[test]
fn a_relative_schedule_switches_a_fault_on_and_off_within_the_run() {
    let (_demo, origin) = demo();
    let start = Instant::now();
    // Active from 30% to 60% of a 10 s run: 3 s to 6 s.
    let (_p, proxy) = start_proxy(&[
        "--duration",
        "10s",
        "--with-http-response",
        "--http-response-status",
        "503",
        "--http-response-sched",
        "start:30%,duration:30%",
    ]);
    let url = format!("http://{origin}/status/200");
    let mut seen = Vec::new();
    // Probe well inside each window (the run started a little before `start`).
    for at in [1_000, 4_500, 7_800] {
        let at = Duration::from_millis(at);
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        seen.push(http_get_via(proxy, &url).0);
    }
    assert_eq!(seen, [200, 503, 200]);
}

#[test]
fn bad_fault_values_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--with-latency", "--latency-mean=-5"], "--latency-mean"),
        (
            &[
                "--with-latency",
                "--latency-mean",
                "300",
                "--latency-distribution",
                "gamma",
            ],
            "--latency-distribution",
        ),
        (
            &[
                "--with-latency",
                "--latency-mean",
                "300",
                "--latency-side",
                "upstream",
            ],
            "--latency-side",
        ),
        (
            &["--with-jitter", "--jitter-direction", "sideways"],
            "--jitter-direction",
        ),
        (
            &["--with-bandwidth", "--bandwidth-unit", "Mbit"],
            "--bandwidth-unit",
        ),
        (
            &[
                "--with-http-response",
                "--http-response-trigger-probability",
                "1.5",
            ],
            "--http-response-trigger-probability",
        ),
        (
            &[
                "--with-blackhole",
                "--blackhole-sched",
                "start:10%,duration:30%",
            ],
            "--blackhole-sched",
        ),
        (
            &["--with-http-response", "--http-response-match", "(unclosed"],
            "--http-response-match",
        ),
        (
            &[
                "--with-sql-error",
                "--sql-error-code",
                "4001",
                "--sql-error-match",
                "x",
            ],
            "--sql-error-code",
        ),
        (
            &[
                "--with-sql-reset",
                "--sql-reset-match",
                "x",
                "--sql-reset-probability",
                "2",
            ],
            "--sql-reset-probability",
        ),
    ];
    for (args, flag) in cases {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["proxy", "--proxy-address", &addr];
        // --duration bounds a run that would wrongly start, except where the case is
        // precisely a % schedule without it.
        if !args.iter().any(|a| a.ends_with("-sched")) {
            all.extend(["--duration", "3s"]);
        }
        all.extend_from_slice(args);
        let (code, _, stderr) = run_tapline(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let line = stderr.trim();
        assert!(
            line.lines().count() == 1 && line.contains(flag),
            "{args:?}: expected one line naming {flag}, got {line:?}"
        );
    }
}
