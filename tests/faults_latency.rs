//! Latency distributions through a real `tapline proxy` in front of `tapline demo`: the mean and
//! spread of the latency added to 200 requests, per distribution, as the client measures it.
//! (Exact draws on tokio's paused clock are checked in `crates/tapline-faults/tests`.)

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{demo, http_get_via, start_proxy};

/// Milliseconds for one GET of `url` through `proxy`, checking it succeeded.
fn timed_get_ms(proxy: SocketAddr, url: &str) -> f64 {
    let start = Instant::now();
    let (status, _) = http_get_via(proxy, url);
    assert_eq!(status, 200);
    start.elapsed().as_secs_f64() * 1000.0
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
    let mut base: Vec<f64> = (0..50).map(|_| timed_get_ms(control, &url)).collect();
    base.sort_by(f64::total_cmp);
    let baseline = percentile(&base, 0.5);
    let mut added: Vec<f64> = (0..n)
        .map(|_| timed_get_ms(faulted, &url) - baseline)
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
/// (4·sd/√200) of the distribution's. Below, that is all: nothing makes a delay shorter.
/// Above, values also get `SLACK` for timer resolution (tokio sleeps in whole milliseconds,
/// rounding up) and late wake-ups: on a 2-core machine at load 6 the whole distribution was
/// seen shifted up by 2–4 ms and its 95th percentile by 6.
const SLACK: f64 = 8.0;

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
    // Scheduling noise widens the measured spread as it shifts the mean, so the spread gets
    // the same allowance above; below, a fixed delay (spread 0) still fails.
    near("normal stddev", iqr_sd(&normal), 5.0, 1.5, SLACK);

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

    // Pareto-normal: Normal(20, 3) plus Pareto(4, 10), mean 20 + 13.3 = 33.3, sd 5.6.
    let both = added_latency(
        origin,
        &[
            "--with-latency",
            "--latency-distribution",
            "pareto_normal",
            "--latency-mean",
            "20",
            "--latency-stddev",
            "3",
            "--latency-shape",
            "4",
            "--latency-scale",
            "10",
        ],
        n,
    );
    near("pareto_normal minimum", both[2], 21.0, 2.0, SLACK);
    near(
        "pareto_normal mean",
        trimmed_mean(&both),
        33.3,
        se(5.6) + 1.0,
        se(5.6) + SLACK,
    );
}
