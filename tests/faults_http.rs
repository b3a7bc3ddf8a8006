//! Faults through a real `tapline proxy` in front of `tapline demo`: what each fault applied is
//! measured from the client, against a fault-free proxy in the same test.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{demo, free_port, http_get_via, run_tapline, tapline, Proc};

/// Starts `tapline proxy` on a free forward-proxy address with `args`.
fn start_proxy(args: &[&str]) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = tapline();
    cmd.args(["proxy", "--quiet", "--proxy-address", &addr.to_string()])
        .args(args);
    let mut p = Proc::spawn("tapline proxy", cmd);
    p.wait_port(addr, Duration::from_secs(20));
    (p, addr)
}

/// Time for one GET of `url` through `proxy`, with its status.
fn timed_get(proxy: SocketAddr, url: &str) -> (u16, Duration) {
    let start = Instant::now();
    let (status, _) = http_get_via(proxy, url);
    (status, start.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Latency added by a proxy started with `fault`, over `n` requests, sorted, in ms: each
/// request's time minus the median time of the same request through a control proxy that
/// runs the same code path with a zero latency. Timing noise on a shared machine only ever
/// adds time, so lower bounds are tight and upper bounds carry an allowance.
fn added_latency(origin: SocketAddr, fault: &[&str], n: usize) -> Vec<f64> {
    let url = format!("http://{origin}/status/200");
    let (_control, control) = start_proxy(&["--with-latency", "--latency-mean", "0"]);
    let (_faulted, faulted) = start_proxy(fault);
    let mut base: Vec<f64> = (0..50).map(|_| ms(timed_get(control, &url).1)).collect();
    base.sort_by(f64::total_cmp);
    let baseline = percentile(&base, 0.5);
    let mut added: Vec<f64> = (0..n)
        .map(|_| {
            let (status, took) = timed_get(faulted, &url);
            assert_eq!(status, 200);
            ms(took) - baseline
        })
        .collect();
    added.sort_by(f64::total_cmp);
    added
}

/// The mean of the middle 90% (robust to the odd scheduling spike).
fn trimmed_mean(sorted: &[f64]) -> f64 {
    let cut = sorted.len() / 20;
    let mid = &sorted[cut..sorted.len() - cut];
    mid.iter().sum::<f64>() / mid.len() as f64
}

/// The spread as the interquartile range over 1.349 (the standard deviation of a normal).
fn iqr_sd(sorted: &[f64]) -> f64 {
    (percentile(sorted, 0.75) - percentile(sorted, 0.25)) / 1.349
}

/// Checks that `value` is within `below` under and `above` over `expected`.
fn near(what: &str, value: f64, expected: f64, below: f64, above: f64) {
    assert!(
        (expected - below..=expected + above).contains(&value),
        "{what}: {value:.2} ms, expected {expected:.2} (-{below:.2}/+{above:.2})"
    );
}

/// Tolerances, for 200 requests per distribution: a mean is within 4 standard errors
/// (4·sd/√200) of the distribution's, plus, above, 3 ms for timer resolution (tokio sleeps in
/// whole milliseconds, rounding up) and scheduling on a loaded machine.
const SLACK: f64 = 3.0;

#[test]
fn latency_distributions_have_their_mean_and_spread() {
    let (_demo, origin) = demo();
    let n = 200;
    let se = |sd: f64| 4.0 * sd / (n as f64).sqrt();

    // Normal(20, 5).
    let normal = added_latency(
        origin,
        &[
            "--with-latency",
            "--latency-mean",
            "20",
            "--latency-stddev",
            "5",
        ],
        n,
    );
    near(
        "normal mean",
        trimmed_mean(&normal),
        20.0,
        se(5.0),
        se(5.0) + SLACK,
    );
    near("normal stddev", iqr_sd(&normal), 5.0, 1.5, 2.5);

    // Uniform(10, 30): mean 20, sd 5.77, 5th percentile 11, 95th 29.
    let uniform = added_latency(
        origin,
        &[
            "--with-latency",
            "--latency-distribution",
            "uniform",
            "--latency-min",
            "10",
            "--latency-max",
            "30",
        ],
        n,
    );
    near(
        "uniform mean",
        trimmed_mean(&uniform),
        20.0,
        se(5.77),
        se(5.77) + SLACK,
    );
    near(
        "uniform 5th percentile",
        percentile(&uniform, 0.05),
        11.0,
        1.5,
        SLACK,
    );
    near(
        "uniform 95th percentile",
        percentile(&uniform, 0.95),
        29.0,
        2.0,
        SLACK,
    );

    // Pareto(shape 4, scale 10): nothing below 10 ms, median 10·2^(1/4) = 11.9 ms.
    let pareto = added_latency(
        origin,
        &[
            "--with-latency",
            "--latency-distribution",
            "pareto",
            "--latency-shape",
            "4",
            "--latency-scale",
            "10",
        ],
        n,
    );
    near("pareto minimum", pareto[2], 10.0, 1.0, SLACK);
    near("pareto median", percentile(&pareto, 0.5), 11.9, 1.0, SLACK);
}

#[test]
fn http_errors_answer_a_binomial_share_of_requests() {
    let (_demo, origin) = demo();
    let (_p, proxy) = start_proxy(&[
        "--with-http-response",
        "--http-response-status",
        "503",
        "--http-response-body",
        "try later",
        "--http-response-trigger-probability",
        "0.3",
    ]);
    let url = format!("http://{origin}/status/200");
    let n = 300;
    let mut errors = 0;
    for _ in 0..n {
        match http_get_via(proxy, &url) {
            (200, _) => {}
            (503, body) => {
                assert_eq!(body, b"try later");
                errors += 1;
            }
            (status, _) => panic!("unexpected status {status}"),
        }
    }
    // Binomial(300, 0.3): mean 90, sd 7.9; allow 4 sd.
    assert!((errors as f64 - 90.0).abs() < 4.0 * 7.94, "{errors} errors");
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
    let mapped: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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

/// Bytes per second of a 2 MB download of `url`, sent as `request` to `addr`.
fn download_rate(addr: SocketAddr, request: &str) -> f64 {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - head, 2_000_000, "incomplete body");
    got.len() as f64 / start.elapsed().as_secs_f64()
}

#[test]
fn bandwidth_paces_downloads_to_the_rate() {
    let (_demo, origin) = demo();
    let mapped: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
