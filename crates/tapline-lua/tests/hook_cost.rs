//! Per-call cost of Lua hooks, measured in process. Ignored by default (a measurement, not a
//! check): `cargo test --release -p tapline-lua --test hook_cost -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tapline_core::{
    block_on, Chunk, Flow, FlowId, HttpRequest, Mode, Protocol, Route, Side, Stage, Timestamp,
};
use tapline_lua::{Host, HostConfig};

const CALLS: u32 = 200_000;

fn plugin(source: &str) -> Arc<dyn Stage> {
    let dir = std::env::temp_dir().join(format!("tapline-hook-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("p{}.lua", source.len()));
    std::fs::write(&path, source).unwrap();
    let mut config = HostConfig::new(Mode::Proxy);
    config.states = 1;
    Host::new(config).load(&path).unwrap()
}

fn report(what: &str, started: Instant) {
    let per = started.elapsed().as_secs_f64() * 1e9 / CALLS as f64;
    println!("{what:<40} {per:>8.0} ns per call ({CALLS} calls)");
}

#[test]
#[ignore]
fn hook_call_cost() {
    let flow = Arc::new(Flow::new(
        FlowId(1),
        Mode::Proxy,
        Protocol::Http,
        Route::Forward,
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        Timestamp(0),
    ));
    let request = HttpRequest {
        method: "GET".into(),
        path: "/index.html".into(),
        version: "HTTP/1.1".into(),
        headers: [
            ("Host", "127.0.0.1:8080"),
            ("User-Agent", "wrk"),
            ("Accept", "*/*"),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let chunk = Chunk {
        from: Side::Client,
        data: Bytes::from(vec![b'x'; 1024]),
    };
    let cases: [(&str, &str); 4] = [
        ("on_request no-op", "return { on_request = function(req, flow) end }"),
        (
            "on_request reading User-Agent",
            "return { on_request = function(req, flow) local ua = req.headers:get('User-Agent') end }",
        ),
        (
            "on_request adding a header",
            "return { on_request = function(req, flow) req.headers:add('X-T', '1') end }",
        ),
        ("on_data no-op (1 KiB chunk)", "return { on_data = function(chunk, flow) end }"),
    ];
    for (what, source) in cases {
        let stage = plugin(source);
        let started = Instant::now();
        block_on(async {
            for _ in 0..CALLS {
                if what.starts_with("on_data") {
                    stage.on_chunk(&flow, &chunk).await.unwrap();
                } else {
                    let mut r = request.clone();
                    stage.on_request(&flow, &mut r).await.unwrap();
                }
            }
        });
        report(what, started);
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(request.clone());
    }
    report("(cloning the request, included above)", started);
}
