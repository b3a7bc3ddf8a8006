//! Fault stages driven through a real `Pipeline` with tokio's paused clock: what each fault
//! applied is measured as time that passed on that clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tapline_core::{
    Chunk, ChunkVerdict, Dispatch, EventKind, Flow, FlowEnd, FlowId, FlowStats, HttpRequest,
    HttpResponse, Message, MessageVerdict, Mode, NullSink, PgError, Pipeline, Protocol,
    RequestVerdict, ResponseVerdict, Route, Side, Stage, StageCounters, Timestamp,
};
use tapline_faults::{
    Aim, Direction, DistributionParams, FaultKind, FaultSpec, FaultStage, LatencyDistribution, Leg,
    LossModel, Rate, Schedule, Target,
};
use tokio::time::Instant;

fn flow(id: u64, route: Route, protocol: Protocol) -> Arc<Flow> {
    Arc::new(Flow::new(
        FlowId(id),
        Mode::Proxy,
        protocol,
        route,
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:5432".parse().unwrap(),
        Timestamp(0),
    ))
}

fn http_flow(id: u64) -> Arc<Flow> {
    flow(id, Route::Forward, Protocol::Http)
}

fn tcp_flow(id: u64) -> Arc<Flow> {
    flow(id, Route::Mapping, Protocol::Postgres)
}

fn spec(kind: FaultKind, leg: Leg, direction: Direction) -> FaultSpec {
    FaultSpec {
        kind,
        target: Target::new(leg, direction),
        probability: 1.0,
        schedule: Schedule::always(),
        aim: None,
    }
}

fn pipeline(spec: FaultSpec) -> (Pipeline, Arc<FaultStage>) {
    let stage = Arc::new(FaultStage::seeded(spec, Instant::now(), 42));
    let stages: Vec<Arc<dyn Stage>> = vec![stage.clone()];
    (Pipeline::new(stages, Arc::new(NullSink)), stage)
}

fn chunk(from: Side, len: usize) -> Chunk {
    Chunk {
        from,
        data: Bytes::from(vec![b'x'; len]),
    }
}

fn request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/status/200".into(),
        version: "HTTP/1.1".into(),
        ..Default::default()
    }
}

fn response(body: usize) -> HttpResponse {
    HttpResponse::new(200, Default::default(), Bytes::from(vec![b'y'; body]))
}

/// The flow of `d` ends (the fault drops what it kept for it).
async fn end(d: &Dispatch) {
    d.event(
        Timestamp(0),
        EventKind::FlowEnd {
            stats: FlowStats::default(),
            end: FlowEnd::Fin,
            duration: Duration::ZERO,
        },
    )
    .await;
}

/// One request and its response through the flow's dispatch; returns the time they took.
async fn exchange(d: &Dispatch) -> Duration {
    let start = Instant::now();
    assert_eq!(d.request(&mut request()).await, RequestVerdict::Continue);
    assert_eq!(
        d.response(&mut response(10)).await,
        ResponseVerdict::Continue
    );
    start.elapsed()
}

fn mean_and_stddev(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn latency(name: &str, params: DistributionParams) -> FaultKind {
    let name = name.parse().unwrap();
    FaultKind::Latency {
        distribution: LatencyDistribution::from_params(name, params).unwrap(),
        per_read_write: false,
    }
}

/// Added latency over 200 requests, in ms.
async fn measure(kind: FaultKind) -> Vec<f64> {
    let (p, _) = pipeline(spec(kind, Leg::Server, Direction::Both));
    let d = p.dispatch(&http_flow(1));
    let mut out = Vec::new();
    for _ in 0..200 {
        out.push(exchange(&d).await.as_secs_f64() * 1000.0);
    }
    out
}

// Tolerances: 200 draws put the sample mean within ~4 standard errors (sd/sqrt(200)) of the
// distribution's mean, and the sample spread within 25% of its standard deviation.

#[tokio::test(start_paused = true)]
async fn normal_latency_applies_once_per_request_with_its_mean_and_spread() {
    let ms = measure(latency(
        "normal",
        DistributionParams {
            mean: Some(20.0),
            stddev: Some(5.0),
            ..Default::default()
        },
    ))
    .await;
    let (mean, sd) = mean_and_stddev(&ms);
    assert!(
        (mean - 20.0).abs() < 4.0 * 5.0 / 200f64.sqrt(),
        "mean {mean}"
    );
    assert!((sd - 5.0).abs() < 1.25, "stddev {sd}");
}

#[tokio::test(start_paused = true)]
async fn uniform_latency_stays_within_its_bounds() {
    let ms = measure(latency(
        "uniform",
        DistributionParams {
            min: Some(10.0),
            max: Some(30.0),
            ..Default::default()
        },
    ))
    .await;
    let (mean, sd) = mean_and_stddev(&ms);
    let expected_sd = 20.0 / 12f64.sqrt();
    assert!(ms.iter().all(|v| (10.0..=30.1).contains(v)), "{ms:?}");
    assert!(
        (mean - 20.0).abs() < 4.0 * expected_sd / 200f64.sqrt(),
        "mean {mean}"
    );
    assert!((sd - expected_sd).abs() < 0.25 * expected_sd, "stddev {sd}");
}

#[tokio::test(start_paused = true)]
async fn pareto_latency_starts_at_its_scale_with_a_heavy_tail() {
    // shape 4, scale 10: mean 4*10/3 = 13.33, sd = 10/3 * sqrt(4/2) = 4.71.
    let ms = measure(latency(
        "pareto",
        DistributionParams {
            shape: Some(4.0),
            scale: Some(10.0),
            ..Default::default()
        },
    ))
    .await;
    let (mean, _) = mean_and_stddev(&ms);
    assert!(ms.iter().all(|v| *v >= 10.0), "{ms:?}");
    assert!(
        (mean - 40.0 / 3.0).abs() < 4.0 * 4.71 / 200f64.sqrt(),
        "mean {mean}"
    );
    let max = ms.iter().cloned().fold(0.0, f64::max);
    assert!(max > 20.0, "no tail: max {max}");
}

#[tokio::test(start_paused = true)]
async fn pareto_normal_latency_adds_both_parts() {
    // normal(20, 3) + pareto(shape 4, scale 10): mean 33.33, sd sqrt(9 + 22.2) = 5.59.
    let ms = measure(latency(
        "pareto_normal",
        DistributionParams {
            mean: Some(20.0),
            stddev: Some(3.0),
            shape: Some(4.0),
            scale: Some(10.0),
            ..Default::default()
        },
    ))
    .await;
    let (mean, _) = mean_and_stddev(&ms);
    assert!(
        (mean - 100.0 / 3.0).abs() < 4.0 * 5.59 / 200f64.sqrt(),
        "mean {mean}"
    );
}

#[tokio::test(start_paused = true)]
async fn per_read_write_latency_delays_both_messages_of_an_exchange() {
    let mut s = spec(
        latency(
            "normal",
            DistributionParams {
                mean: Some(30.0),
                ..Default::default()
            },
        ),
        Leg::Server,
        Direction::Both,
    );
    if let FaultKind::Latency { per_read_write, .. } = &mut s.kind {
        *per_read_write = true;
    }
    let (p, _) = pipeline(s);
    assert_eq!(
        exchange(&p.dispatch(&http_flow(1))).await,
        Duration::from_millis(60)
    );
}

#[tokio::test(start_paused = true)]
async fn byte_latency_applies_once_per_direction_unless_per_read_write() {
    let fixed = |per_read_write| FaultKind::Latency {
        distribution: LatencyDistribution::Normal {
            mean: 100.0,
            stddev: 0.0,
        },
        per_read_write,
    };
    for (per_rw, expected) in [(false, [100, 0, 100, 0]), (true, [100, 100, 100, 100])] {
        let (p, stage) = pipeline(spec(fixed(per_rw), Leg::Server, Direction::Both));
        let d = p.dispatch(&tcp_flow(7));
        let mut took = Vec::new();
        for from in [Side::Client, Side::Client, Side::Server, Side::Server] {
            let start = Instant::now();
            assert_eq!(
                d.chunk(Timestamp(0), chunk(from, 10)).await,
                ChunkVerdict::Pass
            );
            took.push(start.elapsed().as_millis() as u64);
        }
        assert_eq!(took, expected, "per_read_write={per_rw}");
        end(&d).await;
        assert_eq!(stage.tracked_flows(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn ingress_on_the_server_leg_delays_only_server_bytes() {
    let kind = FaultKind::Latency {
        distribution: LatencyDistribution::Normal {
            mean: 50.0,
            stddev: 0.0,
        },
        per_read_write: true,
    };
    let (p, _) = pipeline(spec(kind, Leg::Server, Direction::Ingress));
    let d = p.dispatch(&tcp_flow(1));
    let start = Instant::now();
    d.chunk(Timestamp(0), chunk(Side::Client, 10)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    d.chunk(Timestamp(0), chunk(Side::Server, 10)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn bandwidth_paces_two_megabytes_at_one_megabyte_per_second() {
    let kind = FaultKind::Bandwidth {
        rate: Rate::new(1.0, "MBps").unwrap(),
    };
    let (p, _) = pipeline(spec(kind, Leg::Server, Direction::Ingress));
    let d = p.dispatch(&tcp_flow(1));
    let start = Instant::now();
    let mut sent = 0;
    while sent < 2_000_000 {
        let n = (2_000_000 - sent).min(65_536);
        assert_eq!(
            d.chunk(Timestamp(0), chunk(Side::Server, n)).await,
            ChunkVerdict::Pass
        );
        sent += n;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!((1.8..=2.2).contains(&secs), "took {secs} s");
    // The other direction is not limited.
    let start = Instant::now();
    d.chunk(Timestamp(0), chunk(Side::Client, 1_000_000)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn bandwidth_on_http_pays_for_the_declared_body_length() {
    let kind = FaultKind::Bandwidth {
        rate: Rate::new(1.0, "MBps").unwrap(),
    };
    let (p, _) = pipeline(spec(kind, Leg::Server, Direction::Ingress));
    // A 2 MB body of which the proxy kept only its first MiB (the body limit).
    let mut r = HttpResponse::new(
        200,
        [("Content-Length", "2000000")].into_iter().collect(),
        Bytes::from(vec![0u8; 1 << 20]),
    );
    r.body_len = 0;
    let start = Instant::now();
    assert_eq!(
        p.dispatch(&http_flow(1)).response(&mut r).await,
        ResponseVerdict::Continue
    );
    let secs = start.elapsed().as_secs_f64();
    assert!((1.9..=2.1).contains(&secs), "took {secs} s");
}

#[tokio::test(start_paused = true)]
async fn http_errors_answer_a_binomial_share_of_requests() {
    let kind = FaultKind::HttpError {
        status: 503,
        body: Bytes::from_static(b"unavailable"),
    };
    let mut s = spec(kind, Leg::Server, Direction::Ingress);
    s.probability = 0.3;
    let (p, stage) = pipeline(s);
    let d = p.dispatch(&http_flow(1));
    let n = 1000;
    let mut errors = 0;
    for _ in 0..n {
        match d.request(&mut request()).await {
            RequestVerdict::Respond(r) => {
                assert_eq!((r.status, &r.body[..]), (503, &b"unavailable"[..]));
                errors += 1;
            }
            RequestVerdict::Continue => {}
            other => panic!("{other:?}"),
        }
    }
    // Binomial(1000, 0.3): sd = sqrt(1000 * 0.3 * 0.7) = 14.5; allow 4 sd.
    assert!(
        (errors as f64 - 300.0).abs() < 4.0 * 14.5,
        "{errors} errors"
    );
    // Byte flows are not HTTP: the fault does not look at them.
    assert!(!p.dispatch(&tcp_flow(2)).interest().chunks);
    // The dispatch counted every call, none failed.
    assert_eq!(StageCounters::get(&stage.counters().calls), n);
    assert_eq!(StageCounters::get(&stage.counters().errors), 0);
}

#[tokio::test(start_paused = true)]
async fn blackholed_bytes_are_held_for_the_life_of_the_flow() {
    let (p, stage) = pipeline(spec(FaultKind::Blackhole, Leg::Server, Direction::Ingress));
    let d = p.dispatch(&tcp_flow(3));
    assert_eq!(
        d.chunk(Timestamp(0), chunk(Side::Client, 5)).await,
        ChunkVerdict::Pass
    );
    for _ in 0..3 {
        assert_eq!(
            d.chunk(Timestamp(0), chunk(Side::Server, 5)).await,
            ChunkVerdict::Hold
        );
    }
    end(&d).await;
    assert_eq!(stage.tracked_flows(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_http_blackhole_never_answers_until_the_flow_ends() {
    let (p, stage) = pipeline(spec(FaultKind::Blackhole, Leg::Client, Direction::Ingress));
    let d = p.dispatch(&http_flow(9));
    let waiting = {
        let d = d.clone();
        tokio::spawn(async move { d.request(&mut request()).await })
    };
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!waiting.is_finished(), "a blackhole answered");
    end(&d).await;
    let verdict = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the blackhole let go when the flow ended")
        .unwrap();
    assert!(matches!(verdict, RequestVerdict::Close(_)));
    assert_eq!(stage.tracked_flows(), 0);
}

#[tokio::test(start_paused = true)]
async fn packet_loss_delays_but_never_alters_bytes() {
    let kind = FaultKind::PacketLoss {
        model: LossModel::new(0.2),
    };
    let (p, _) = pipeline(spec(kind, Leg::Server, Direction::Both));
    let d = p.dispatch(&tcp_flow(1));
    let start = Instant::now();
    let mut delayed = 0;
    for i in 0..200 {
        let before = Instant::now();
        let verdict = d.chunk(Timestamp(0), chunk(Side::Server, 100 + i)).await;
        assert_eq!(verdict, ChunkVerdict::Pass);
        if before.elapsed() > Duration::ZERO {
            assert!(before.elapsed() >= Duration::from_millis(200));
            delayed += 1;
        }
    }
    // One segment per chunk lost with p = 0.2: binomial(200, 0.2), sd 5.7.
    assert!(
        (delayed as f64 - 40.0).abs() < 4.0 * 5.7,
        "{delayed} delayed"
    );
    assert!(start.elapsed() >= Duration::from_millis(200 * delayed));
}

#[tokio::test(start_paused = true)]
async fn certain_loss_aborts_the_exchange_as_tcp_gives_up() {
    let kind = FaultKind::PacketLoss {
        model: LossModel::new(1.0),
    };
    let (p, _) = pipeline(spec(kind, Leg::Client, Direction::Ingress));
    let start = Instant::now();
    let verdict = p.dispatch(&http_flow(1)).request(&mut request()).await;
    assert!(matches!(verdict, RequestVerdict::Close(_)), "{verdict:?}");
    // 15 timeouts from 200 ms, doubling up to 120 s: 204.6 s + 5 x 120 s.
    assert_eq!(start.elapsed(), Duration::from_millis(804_600));
}

#[tokio::test(start_paused = true)]
async fn a_schedule_switches_the_fault_on_and_off() {
    let kind = FaultKind::Latency {
        distribution: LatencyDistribution::Normal {
            mean: 10.0,
            stddev: 0.0,
        },
        per_read_write: true,
    };
    let mut s = spec(kind, Leg::Server, Direction::Ingress);
    s.schedule = Schedule::parse("start:10%,duration:30%", Some(Duration::from_secs(10))).unwrap();
    let (p, _) = pipeline(s);
    let d = p.dispatch(&http_flow(1));
    let mut on = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        d.response(&mut response(1)).await;
        on.push(start.elapsed() > Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(1) - start.elapsed()).await;
    }
    let expected = [
        false, true, true, true, false, false, false, false, false, false,
    ];
    assert_eq!(on, expected);
}

#[tokio::test(start_paused = true)]
async fn jitter_applies_at_most_frequency_times_a_second_within_its_amplitude() {
    let kind = FaultKind::Jitter {
        amplitude: Duration::from_millis(20),
        frequency: 5.0,
    };
    let (p, _) = pipeline(spec(kind, Leg::Server, Direction::Ingress));
    let d = p.dispatch(&tcp_flow(1));
    let start = Instant::now();
    let mut jittered = 0;
    // A chunk every 10 ms for 2 s: at most 5 jitters a second, so about 10.
    while start.elapsed() < Duration::from_secs(2) {
        let before = Instant::now();
        d.chunk(Timestamp(0), chunk(Side::Server, 10)).await;
        let took = before.elapsed();
        assert!(took <= Duration::from_millis(20), "{took:?}");
        if took > Duration::ZERO {
            jittered += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!((8..=11).contains(&jittered), "{jittered} jitters in 2 s");
}

#[tokio::test(start_paused = true)]
async fn capture_flows_are_never_faulted() {
    let (p, _) = pipeline(spec(FaultKind::Blackhole, Leg::Server, Direction::Both));
    let f = Arc::new(Flow {
        mode: Mode::Capture,
        ..(*tcp_flow(1)).clone()
    });
    assert_eq!(p.dispatch(&f).interest(), Default::default());
}

fn pg_message(from: Side, type_name: &str, sql: &str) -> Message {
    Message {
        protocol: Protocol::Postgres,
        from,
        type_name: type_name.into(),
        fields: serde_json::json!({ "sql": sql }),
        raw: Bytes::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn sql_faults_hit_matching_statements_and_executions_only() {
    let error = PgError {
        severity: "ERROR".into(),
        code: "40001".into(),
        message: "rehearsed".into(),
    };
    let mut s = spec(
        FaultKind::SqlError(error.clone()),
        Leg::Server,
        Direction::Ingress,
    );
    s.aim = Some(Aim::new("^update orders").unwrap());
    let (p, _) = pipeline(s);
    let d = p.dispatch(&tcp_flow(1));
    let verdict = |from, t: &str, sql: &str| {
        let d = d.clone();
        let mut m = pg_message(from, t, sql);
        async move { d.message(Timestamp(0), &mut m).await }
    };
    let (v, by) = verdict(Side::Client, "Query", "UPDATE orders SET x = 1").await;
    assert_eq!(v, MessageVerdict::PgError(error.clone()));
    assert_eq!(by.as_deref(), Some("fault plugin sql-error"));
    // A prepared statement's executions match by the SQL they were prepared from; the
    // Parse itself only prepares.
    let (v, _) = verdict(Side::Client, "Bind", "update orders set x = $1").await;
    assert!(matches!(v, MessageVerdict::PgError(_)));
    let (v, _) = verdict(Side::Client, "Parse", "update orders set x = $1").await;
    assert_eq!(v, MessageVerdict::Continue);
    let (v, _) = verdict(Side::Client, "Query", "select * from orders").await;
    assert_eq!(v, MessageVerdict::Continue);
    let (v, _) = verdict(Side::Server, "CommandComplete", "update orders").await;
    assert_eq!(v, MessageVerdict::Continue);

    // Latency: the matching statement is held for the delay, on the stage's own clock.
    let mut s = spec(
        FaultKind::SqlLatency(LatencyDistribution::Normal {
            mean: 250.0,
            stddev: 0.0,
        }),
        Leg::Server,
        Direction::Ingress,
    );
    s.aim = Some(Aim::new("report").unwrap());
    let (p, _) = pipeline(s);
    let d = p.dispatch(&tcp_flow(2));
    let started = Instant::now();
    let mut m = pg_message(Side::Client, "Query", "select * from monthly_REPORT");
    assert_eq!(
        d.message(Timestamp(0), &mut m).await.0,
        MessageVerdict::Continue
    );
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    let mut m = pg_message(Side::Client, "Query", "select 1");
    d.message(Timestamp(0), &mut m).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(250),
        "others are not held"
    );
}

#[tokio::test(start_paused = true)]
async fn latency_aimed_at_a_route_delays_only_its_exchanges() {
    let kind = latency(
        "normal",
        DistributionParams {
            mean: Some(100.0),
            stddev: Some(0.0),
            ..Default::default()
        },
    );
    let mut s = spec(kind, Leg::Server, Direction::Ingress);
    s.aim = Some(Aim::new("^POST /orders").unwrap());
    let (p, _) = pipeline(s);
    let d = p.dispatch(&http_flow(1));
    let timed = |method: &'static str, path: &'static str| {
        let d = d.clone();
        async move {
            let start = Instant::now();
            let mut req = request();
            req.method = method.into();
            req.path = path.into();
            d.request(&mut req).await;
            d.response(&mut response(10)).await;
            start.elapsed()
        }
    };
    assert_eq!(timed("POST", "/orders/7").await, Duration::from_millis(100));
    assert_eq!(timed("GET", "/orders/7").await, Duration::ZERO);
    assert_eq!(timed("POST", "/carts").await, Duration::ZERO);
    assert_eq!(timed("post", "/orders").await, Duration::from_millis(100));
}
