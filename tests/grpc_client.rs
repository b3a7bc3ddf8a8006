//! tapline-grpc's client against real Python plugin processes on loopback: description,
//! routing, verdicts, failure policy, health supervision and the capture-mode queue.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_port, grpc_plugin, grpc_stubs, json_lines, temp_dir};
use tapline_core::{
    block_on, Chunk, ChunkVerdict, FailurePolicy, Flow, FlowId, HttpRequest, HttpResponse, Mode,
    NullSink, Pipeline, Protocol, RequestVerdict, ResponseVerdict, Route, Side, Stage,
    StageCounters, Timestamp,
};
use tapline_grpc::{probe, GrpcConfig, GrpcError, GrpcStage};

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn flow(id: u64, route: Route, protocol: Protocol, mode: Mode) -> Arc<Flow> {
    Arc::new(Flow::new(
        FlowId(id),
        mode,
        protocol,
        route,
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:5432".parse().unwrap(),
        Timestamp(0),
    ))
}

fn chunk(from: Side, data: &'static [u8]) -> Chunk {
    Chunk {
        from,
        data: Bytes::from_static(data),
    }
}

fn request(path: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: path.into(),
        url: Some(format!("http://127.0.0.1:7070{path}")),
        version: "HTTP/1.1".into(),
        headers: [("Host", "127.0.0.1:7070"), ("User-Agent", "test")]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

async fn connect(port: u16, mode: Mode, tune: impl FnOnce(&mut GrpcConfig)) -> Arc<GrpcStage> {
    let mut config = GrpcConfig::new(url(port), mode);
    // Generous, so a loaded machine does not turn a verdict into a fail-open.
    config.timeout = Duration::from_secs(10);
    tune(&mut config);
    GrpcStage::connect(config).await.expect("connect")
}

/// A pipeline of `stage` alone with failure policy `policy` (`--plugin-failure`): the
/// dispatch counts failed calls and applies the policy.
fn pipeline(stage: &Arc<GrpcStage>, policy: FailurePolicy) -> Pipeline {
    Pipeline::new(vec![stage.clone() as Arc<dyn Stage>], Arc::new(NullSink))
        .with_failure_policy(policy)
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    StageCounters::get(c)
}

/// Polls `what` until true (a safety net, not a timing assertion).
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_describes_a_plugin_and_fails_clearly_without_one() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _p = grpc_plugin(&stubs, "pg_plugin.py", port, &[]);
    let d = probe(&url(port), Duration::from_secs(5)).await.unwrap();
    assert_eq!(d.name, "PostgreSQLPlugin");
    assert!(!d.capabilities.http_forward && !d.capabilities.tunnel);
    let text = d.to_string();
    for want in [
        "PostgreSQLPlugin 0.1.0",
        "tapline tests",
        "python",
        "protocols: postgresql",
        &url(port),
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }

    let closed = free_port();
    let err = probe(&url(closed), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains(&closed.to_string()), "{err}");
    assert!(matches!(
        probe("ftp://127.0.0.1:1", Duration::from_secs(1)).await,
        Err(GrpcError::InvalidAddress { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_plugin_sees_http_and_both_directions_of_tunnel_bytes() {
    let Some(stubs) = grpc_stubs() else { return };
    let dir = temp_dir();
    let record = dir.path().join("echo.jsonl");
    let port = free_port();
    let _p = grpc_plugin(&stubs, "echo_plugin.py", port, &[record.to_str().unwrap()]);
    let stage = connect(port, Mode::Proxy, |_| {}).await;
    assert!(stage.is_online());
    assert_eq!(stage.name(), "EchoPlugin");

    let forward = flow(7, Route::Forward, Protocol::Http, Mode::Proxy);
    let interest = stage.interest(&forward);
    assert!(interest.http() && !interest.chunks);
    let mut req = request("/echo?a=1");
    assert_eq!(
        stage.on_request(&forward, &mut req).await.unwrap(),
        RequestVerdict::Continue
    );
    assert_eq!(req, request("/echo?a=1"), "an echoed request is unchanged");
    let mut resp = HttpResponse::new(200, Default::default(), Bytes::from_static(b"hello"));
    let before = resp.clone();
    assert_eq!(
        stage.on_response(&forward, &mut resp).await.unwrap(),
        ResponseVerdict::Continue
    );
    assert_eq!(resp, before);

    let tunnel = flow(8, Route::Tunnel, Protocol::Tls, Mode::Proxy);
    assert!(stage.interest(&tunnel).chunks);
    let up = chunk(Side::Client, b"\x16\x03\x01hello");
    let down = chunk(Side::Server, b"\x16\x03\x03world");
    assert_eq!(
        stage.on_chunk(&tunnel, &up).await.unwrap(),
        ChunkVerdict::Pass
    );
    assert_eq!(
        stage.on_chunk(&tunnel, &down).await.unwrap(),
        ChunkVerdict::Pass
    );

    let seen = json_lines(&record);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0]["rpc"], "ProcessHttpRequest");
    assert_eq!(seen[0]["path"], "/echo?a=1");
    assert_eq!(seen[0]["headers"][0][0], "Host");
    assert_eq!(seen[1]["status"], 200);
    assert_eq!(seen[1]["body"], "hello");
    // The tunnel id is the flow's UUID. The echo plugin declares the CLIENT leg:
    // client->server bytes are INGRESS.
    assert_eq!(
        (&seen[2]["id"], &seen[2]["side"], &seen[2]["direction"]),
        (
            &tunnel.uid.to_string().into(),
            &"CLIENT".into(),
            &"INGRESS".into()
        )
    );
    assert!(seen[2]["chunk"].as_str().unwrap().ends_with("hello"));
    assert_eq!(seen[3]["direction"], "EGRESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lueur_guide_echo_plugin_fails_open_on_its_broken_tunnel_answer() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let plugin = grpc_plugin(&stubs, "lueur_echo_plugin.py", port, &[]);
    let stage = connect(port, Mode::Proxy, |_| {}).await;
    let open = pipeline(&stage, FailurePolicy::Open);
    let tunnel = flow(1, Route::Tunnel, Protocol::Tls, Mode::Proxy);
    assert_eq!(
        open.dispatch(&tunnel)
            .chunk(Timestamp(0), chunk(Side::Client, b"bytes"))
            .await,
        ChunkVerdict::Pass
    );
    assert_eq!(count(&stage.counters().errors), 1);
    assert!(
        stage.is_online(),
        "an erroring call does not disable the plugin"
    );
    // Its HTTP hooks work.
    let forward = flow(2, Route::Forward, Protocol::Http, Mode::Proxy);
    let mut req = request("/");
    assert_eq!(
        open.dispatch(&forward).request(&mut req).await,
        RequestVerdict::Continue
    );
    assert_eq!(count(&stage.counters().errors), 1);

    let closed = pipeline(&stage, FailurePolicy::Closed);
    let ChunkVerdict::Close(reason) = closed
        .dispatch(&tunnel)
        .chunk(Timestamp(0), chunk(Side::Client, b"bytes"))
        .await
    else {
        panic!("--plugin-failure closed must close the flow");
    };
    assert!(reason.contains("EchoPlugin"), "{reason}");
    assert_eq!(count(&stage.counters().errors), 2);
    let mut p = plugin;
    p.wait_output("tunnel 5", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plugin_gets_only_postgres_mappings() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _p = grpc_plugin(&stubs, "pg_plugin.py", port, &[]);
    let stage = connect(port, Mode::Proxy, |_| {}).await;
    let pg = flow(1, Route::Mapping, Protocol::Postgres, Mode::Proxy);
    assert!(stage.interest(&pg).chunks);
    for other in [
        flow(2, Route::Mapping, Protocol::Tcp, Mode::Proxy),
        flow(3, Route::Tunnel, Protocol::Tls, Mode::Proxy),
        flow(4, Route::Forward, Protocol::Http, Mode::Proxy),
    ] {
        assert_eq!(stage.interest(&other), Default::default(), "{other:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_rewrite_plugins_answer_and_edit_requests() {
    let Some(stubs) = grpc_stubs() else { return };
    let (abort_port, rewrite_port) = (free_port(), free_port());
    let _a = grpc_plugin(&stubs, "abort_plugin.py", abort_port, &[]);
    let _r = grpc_plugin(&stubs, "rewrite_plugin.py", rewrite_port, &[]);
    let forward = flow(1, Route::Forward, Protocol::Http, Mode::Proxy);

    let abort = connect(abort_port, Mode::Proxy, |_| {}).await;
    let RequestVerdict::Respond(answer) =
        abort.on_request(&forward, &mut request("/")).await.unwrap()
    else {
        panic!("ABORT must answer");
    };
    assert_eq!(answer.status, 418);
    assert_eq!(answer.headers.get("x-aborted-by"), Some("abort_plugin"));
    assert_eq!(&answer.body[..], b"short and stout\n");

    let rewrite = connect(rewrite_port, Mode::Proxy, |_| {}).await;
    let mut req = request("/orig?q=1");
    assert_eq!(
        rewrite.on_request(&forward, &mut req).await.unwrap(),
        RequestVerdict::Continue
    );
    assert_eq!(req.path, "/echo?rewritten=yes&was=%2Forig%3Fq%3D1");
    assert_eq!(
        req.url.as_deref(),
        Some("http://127.0.0.1:7070/echo?rewritten=yes&was=%2Forig%3Fq%3D1")
    );
    assert_eq!(req.headers.get("x-rewritten"), Some("yes"));
    assert_eq!(req.headers.get("user-agent"), Some("test"));
    let mut resp = HttpResponse::new(201, Default::default(), Bytes::new());
    assert_eq!(
        rewrite.on_response(&forward, &mut resp).await.unwrap(),
        ResponseVerdict::Continue
    );
    assert_eq!(resp.headers.get("x-plugin-saw"), Some("201"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_plugin_replaces_closes_and_buffers() {
    let Some(stubs) = grpc_stubs() else { return };
    let tcp = flow(5, Route::Mapping, Protocol::Tcp, Mode::Proxy);
    let (rp, cp, bp) = (free_port(), free_port(), free_port());
    let _r = grpc_plugin(&stubs, "tunnel_plugin.py", rp, &["replace"]);
    let _c = grpc_plugin(&stubs, "tunnel_plugin.py", cp, &["close"]);
    let _b = grpc_plugin(&stubs, "tunnel_plugin.py", bp, &["buffer"]);

    let replace = connect(rp, Mode::Proxy, |_| {}).await;
    assert!(replace.interest(&tcp).chunks);
    assert_eq!(
        replace
            .on_chunk(&tcp, &chunk(Side::Client, b"ping"))
            .await
            .unwrap(),
        ChunkVerdict::Replace(Bytes::from_static(b"PING"))
    );
    assert_eq!(
        replace
            .on_chunk(&tcp, &chunk(Side::Server, b"pong"))
            .await
            .unwrap(),
        ChunkVerdict::Pass
    );

    let close = connect(cp, Mode::Proxy, |_| {}).await;
    assert_eq!(
        close
            .on_chunk(&tcp, &chunk(Side::Client, b"x"))
            .await
            .unwrap(),
        ChunkVerdict::Close("tunnel_plugin says bye".into())
    );

    let buffer = connect(bp, Mode::Proxy, |_| {}).await;
    assert_eq!(
        buffer
            .on_chunk(&tcp, &chunk(Side::Client, b"one\n"))
            .await
            .unwrap(),
        ChunkVerdict::Hold
    );
    assert_eq!(
        buffer
            .on_chunk(&tcp, &chunk(Side::Client, b"two\n"))
            .await
            .unwrap(),
        ChunkVerdict::Replace(Bytes::from_static(b"one\ntwo\n"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_past_its_timeout_fails_open_or_closes() {
    let Some(stubs) = grpc_stubs() else { return };
    let port = free_port();
    let _p = grpc_plugin(&stubs, "sleepy_plugin.py", port, &["30"]);
    let tcp = flow(1, Route::Mapping, Protocol::Tcp, Mode::Proxy);
    let stage = connect(port, Mode::Proxy, |c| {
        c.timeout = Duration::from_millis(300)
    })
    .await;
    let open = pipeline(&stage, FailurePolicy::Open);
    let started = Instant::now();
    assert_eq!(
        open.dispatch(&tcp)
            .chunk(Timestamp(0), chunk(Side::Client, b"x"))
            .await,
        ChunkVerdict::Pass
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout bounds the call"
    );
    assert_eq!(count(&stage.counters().timeouts), 1);
    assert_eq!(count(&stage.counters().errors), 1);

    let closed = pipeline(&stage, FailurePolicy::Closed);
    let forward = flow(2, Route::Forward, Protocol::Http, Mode::Proxy);
    assert!(matches!(
        closed.dispatch(&forward).request(&mut request("/")).await,
        RequestVerdict::Close(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_enables_a_late_plugin_and_disables_a_dead_one() {
    let Some(stubs) = grpc_stubs() else { return };
    let dir = temp_dir();
    let record = dir.path().join("echo.jsonl");
    let port = free_port();
    let stage = connect(port, Mode::Proxy, |_| {}).await;
    let tcp = flow(1, Route::Mapping, Protocol::Tcp, Mode::Proxy);
    assert!(!stage.is_online());
    assert_eq!(stage.interest(&tcp), Default::default());

    let plugin = grpc_plugin(&stubs, "echo_plugin.py", port, &[record.to_str().unwrap()]);
    eventually("enabling the late plugin", Duration::from_secs(15), || {
        stage.is_online()
    })
    .await;
    assert_eq!(stage.name(), "EchoPlugin");
    assert!(stage.interest(&tcp).chunks);
    assert_eq!(
        stage
            .on_chunk(&tcp, &chunk(Side::Client, b"seen"))
            .await
            .unwrap(),
        ChunkVerdict::Pass
    );
    assert_eq!(json_lines(&record).len(), 1);

    drop(plugin);
    // Calls fail open until the supervisor notices; then they are skipped and counted.
    eventually("disabling the dead plugin", Duration::from_secs(15), || {
        !stage.is_online()
    })
    .await;
    assert_eq!(
        stage
            .on_chunk(&tcp, &chunk(Side::Client, b"lost"))
            .await
            .unwrap(),
        ChunkVerdict::Pass
    );
    assert!(count(&stage.counters().dropped) >= 1);
    assert!(stage.interest(&tcp).chunks, "routing is kept while offline");

    let _back = grpc_plugin(&stubs, "echo_plugin.py", port, &[record.to_str().unwrap()]);
    eventually("re-enabling the plugin", Duration::from_secs(15), || {
        stage.is_online()
    })
    .await;
    assert_eq!(
        stage
            .on_chunk(&tcp, &chunk(Side::Client, b"again"))
            .await
            .unwrap(),
        ChunkVerdict::Pass
    );
    let seen = json_lines(&record);
    assert_eq!(seen.last().unwrap()["chunk"], "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_mode_enqueues_from_outside_the_runtime_and_drops_when_full() {
    let Some(stubs) = grpc_stubs() else { return };
    let dir = temp_dir();
    let record = dir.path().join("echo.jsonl");
    let (echo_port, sleepy_port) = (free_port(), free_port());
    let _e = grpc_plugin(
        &stubs,
        "echo_plugin.py",
        echo_port,
        &[record.to_str().unwrap()],
    );
    let _s = grpc_plugin(&stubs, "sleepy_plugin.py", sleepy_port, &["30"]);
    let echo = connect(echo_port, Mode::Capture, |_| {}).await;
    let sleepy = connect(sleepy_port, Mode::Capture, |c| {
        c.queue_capacity = 2;
        c.timeout = Duration::from_millis(300);
    })
    .await;
    let pg = flow(3, Route::Capture, Protocol::Postgres, Mode::Capture);

    // Capture workers call hooks with block_on on plain threads, outside any runtime.
    let (e, s, f) = (echo.clone(), sleepy.clone(), pg.clone());
    std::thread::spawn(move || {
        for data in [&b"Q1"[..], b"Q2", b"Q3"] {
            let c = Chunk {
                from: Side::Client,
                data: Bytes::from_static(data),
            };
            assert_eq!(block_on(e.on_chunk(&f, &c)).unwrap(), ChunkVerdict::Pass);
        }
        for _ in 0..20 {
            let c = chunk(Side::Server, b"R");
            assert_eq!(block_on(s.on_chunk(&f, &c)).unwrap(), ChunkVerdict::Pass);
        }
    })
    .join()
    .unwrap();
    assert!(
        count(&sleepy.counters().dropped) >= 10,
        "a full queue drops calls: {}",
        count(&sleepy.counters().dropped)
    );

    // on_stop makes the calls still queued.
    echo.on_stop().await.unwrap();
    let chunks: Vec<String> = json_lines(&record)
        .iter()
        .map(|v| v["chunk"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chunks, ["Q1", "Q2", "Q3"], "in order, all of them");
}
