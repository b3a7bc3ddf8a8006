//! Every example plugin of `examples/plugins/`, driven as a stage with real core events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tapline_core::{
    block_on, Event, EventKind, EventSink, Flow, FlowId, HttpRequest, HttpResponse, Message,
    MessageVerdict, Mode, PgTransaction, Protocol, RequestVerdict, ResponseVerdict, Route, Side,
    Stage, Timestamp, Transaction,
};
use tapline_lua::{Host, HostConfig, LuaPlugin, PluginArg};

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        self.0.lock().push(event.clone());
    }
}

impl Collect {
    fn take(&self) -> Vec<(String, String, serde_json::Value)> {
        std::mem::take(&mut *self.0.lock())
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Record(r) => Some(("record".into(), r.message, r.fields)),
                EventKind::Alert(r) => Some(("alert".into(), r.message, r.fields)),
                _ => None,
            })
            .collect()
    }
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .join(name)
}

fn load(name: &str, mode: Mode, args: &[&str]) -> (Arc<LuaPlugin>, Arc<Collect>) {
    let sink = Arc::new(Collect::default());
    let mut config = HostConfig::new(mode);
    config.sink = sink.clone();
    config.states = 2;
    config.args =
        PluginArg::parse_all(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).unwrap();
    let plugin = Host::new(config).load(&example(name)).unwrap();
    (plugin, sink)
}

fn flow(id: u64, mode: Mode, protocol: Protocol) -> Arc<Flow> {
    Arc::new(Flow::new(
        FlowId(id),
        mode,
        protocol,
        Route::Mapping,
        "127.0.0.1:50000".parse().unwrap(),
        "127.0.0.1:5432".parse().unwrap(),
        Timestamp::from_secs_micros(1_700_000_000, 0),
    ))
}

fn get(path: &str, ua: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: path.into(),
        version: "HTTP/1.1".into(),
        headers: [("Host", "127.0.0.1"), ("User-Agent", ua)]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

#[test]
fn ua_watch_alerts_on_the_configured_word() {
    let (plugin, sink) = load("ua_watch.lua", Mode::Capture, &["ua-watch.word=pcap"]);
    let f = flow(1, Mode::Capture, Protocol::Http);
    block_on(async {
        // Hooks that raise answer Err: unwrapping checks that none did.
        for req in [get("/", "curl/8.0"), get("/x", "pcap testcase")] {
            let verdict = plugin.on_request(&f, &mut req.clone()).await.unwrap();
            assert_eq!(verdict, RequestVerdict::Continue);
        }
    });
    let r = sink.take();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "alert");
    assert_eq!(r[0].1, "User-Agent contains pcap");
    assert_eq!(r[0].2["user_agent"], "pcap testcase");
    assert_eq!(r[0].2["path"], "/x");
}

#[test]
fn sql_log_records_each_statement_with_outcome_and_latency() {
    let (plugin, sink) = load("sql_log.lua", Mode::Capture, &[]);
    let f = flow(2, Mode::Capture, Protocol::Postgres);
    let msg = |ms: i64, from: Side, t: &str, fields: serde_json::Value| {
        (
            Timestamp::from_secs_micros(1_700_000_000, ms * 1000),
            Message {
                protocol: Protocol::Postgres,
                from,
                type_name: t.into(),
                fields,
                raw: Bytes::new(),
            },
        )
    };
    block_on(async {
        for e in [
            msg(
                0,
                Side::Client,
                "Query",
                serde_json::json!({"sql": "select 1"}),
            ),
            msg(
                1,
                Side::Server,
                "DataRow",
                serde_json::json!({"values": ["1"]}),
            ),
            msg(
                3,
                Side::Server,
                "CommandComplete",
                serde_json::json!({"tag": "SELECT 1"}),
            ),
            msg(
                10,
                Side::Client,
                "Parse",
                serde_json::json!({"sql": "select * from nope"}),
            ),
            msg(10, Side::Client, "Bind", serde_json::json!({})),
            msg(10, Side::Client, "Execute", serde_json::json!({})),
            msg(
                17,
                Side::Server,
                "ErrorResponse",
                serde_json::json!({"code": "42P01", "message": "relation \"nope\" does not exist"}),
            ),
        ] {
            let (ts, mut m) = e;
            let verdict = plugin.on_message(&f, ts, &mut m).await.unwrap();
            assert_eq!(verdict, MessageVerdict::Continue);
        }
    });
    let r = sink.take();
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].1, "select 1");
    assert_eq!(r[0].2["outcome"], "ok");
    assert_eq!(r[0].2["tag"], "SELECT 1");
    assert_eq!(r[0].2["latency_ms"], 3.0);
    assert_eq!(r[1].2["sql"], "select * from nope");
    assert_eq!(r[1].2["outcome"], "error");
    assert_eq!(r[1].2["code"], "42P01");
    assert_eq!(r[1].2["latency_ms"], 7.0);
}

#[test]
fn add_header_adds_the_configured_header() {
    let (plugin, _) = load(
        "add_header.lua",
        Mode::Proxy,
        &["add-header.name=X-Debug", "add-header.value=on"],
    );
    let mut req = get("/", "curl");
    let verdict =
        block_on(plugin.on_request(&flow(3, Mode::Proxy, Protocol::Http), &mut req)).unwrap();
    assert_eq!(verdict, RequestVerdict::Continue);
    assert_eq!(req.headers.get("x-debug"), Some("on"));
    assert_eq!(req.headers.len(), 3);
}

#[test]
fn block_path_answers_403_under_the_prefix() {
    let (plugin, _) = load(
        "block_path.lua",
        Mode::Proxy,
        &["block-path.prefix=/private"],
    );
    let f = flow(4, Mode::Proxy, Protocol::Http);
    match block_on(plugin.on_request(&f, &mut get("/private/x", "curl"))).unwrap() {
        RequestVerdict::Respond(r) => {
            assert_eq!(r.status, 403);
            assert_eq!(&r.body[..], b"forbidden by tapline\n");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        block_on(plugin.on_request(&f, &mut get("/public", "curl"))).unwrap(),
        RequestVerdict::Continue
    );
}

#[test]
fn slow_queries_alerts_over_the_threshold() {
    let (plugin, sink) = load("slow_queries.lua", Mode::Capture, &["slow-queries.ms=50"]);
    let f = flow(5, Mode::Capture, Protocol::Postgres);
    let tx = |ms: u64, sql: &str| {
        Event::on_flow(
            &f,
            Timestamp::now(),
            EventKind::Transaction(Transaction::Postgres(PgTransaction {
                sql: sql.into(),
                rows: 1,
                tag: "SELECT 1".into(),
                latency: Duration::from_millis(ms),
                ..Default::default()
            })),
        )
    };
    block_on(async {
        plugin.on_event(&tx(10, "select 1")).await.unwrap();
        plugin
            .on_event(&tx(120, "select pg_sleep(0.12)"))
            .await
            .unwrap();
    });
    let r = sink.take();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "alert");
    assert_eq!(r[0].1, "slow query: 120.0 ms");
    assert_eq!(r[0].2["sql"], "select pg_sleep(0.12)");
}

#[test]
fn http_stats_summarises_once_across_states() {
    let (plugin, sink) = load("http_stats.lua", Mode::Capture, &[]);
    block_on(async {
        for (id, status) in [(1, 200), (2, 200), (3, 404), (4, 200), (5, 500)] {
            let f = flow(id, Mode::Capture, Protocol::Http);
            let mut resp = HttpResponse::new(status, Default::default(), Bytes::new());
            let verdict = plugin.on_response(&f, &mut resp).await.unwrap();
            assert_eq!(verdict, ResponseVerdict::Continue);
        }
        plugin.on_stop().await.unwrap();
    });
    let r = sink.take();
    assert_eq!(r.len(), 1, "one summary though two states stop: {r:?}");
    assert_eq!(r[0].1, "http status summary");
    assert_eq!(r[0].2["total"], 5);
    assert_eq!(
        r[0].2["counts"],
        serde_json::json!({"200": 3, "404": 1, "500": 1})
    );
}

#[test]
fn slow_http_alerts_over_the_threshold_in_both_modes() {
    for mode in [Mode::Capture, Mode::Proxy] {
        let (plugin, sink) = load("slow_http.lua", mode, &["slow-http.ms=40"]);
        let f = flow(6, mode, Protocol::Http);
        let tx = |ms: u64, path: &str| {
            let request = HttpRequest {
                method: "GET".into(),
                path: path.into(),
                ..Default::default()
            };
            let response = HttpResponse::new(200, Default::default(), Bytes::new());
            Event::on_flow(
                &f,
                Timestamp::now(),
                EventKind::Transaction(Transaction::Http {
                    request: Box::new(request),
                    response: Box::new(response),
                    latency: Duration::from_millis(ms),
                }),
            )
        };
        block_on(async {
            plugin.on_event(&tx(5, "/fast")).await.unwrap();
            plugin.on_event(&tx(55, "/slow")).await.unwrap();
        });
        let alerts = sink.take();
        assert_eq!(alerts.len(), 1, "{mode:?}: {alerts:?}");
        let (kind, message, fields) = &alerts[0];
        assert_eq!(kind, "alert");
        assert!(message.starts_with("slow GET /slow: 55.0 ms"), "{message}");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["mode"], mode.as_str());
        assert_eq!(fields["flow_uid"], f.uid.to_string());
    }
}

fn pg(from: Side, t: &str, fields: serde_json::Value) -> Message {
    Message {
        protocol: Protocol::Postgres,
        from,
        type_name: t.into(),
        fields,
        raw: Bytes::new(),
    }
}

#[test]
fn retry_rehearsal_fails_only_updates_of_orders() {
    let (plugin, sink) = load(
        "retry_rehearsal.lua",
        Mode::Proxy,
        &["retry-rehearsal.share=1"],
    );
    let f = flow(3, Mode::Proxy, Protocol::Postgres);
    let ts = Timestamp::from_secs_micros(1_700_000_000, 0);
    block_on(async {
        let mut update = pg(
            Side::Client,
            "Query",
            serde_json::json!({"sql": "UPDATE orders SET paid = true"}),
        );
        match plugin.on_message(&f, ts, &mut update).await.unwrap() {
            MessageVerdict::PgError(e) => assert_eq!(e.code, "40001"),
            other => panic!("expected an error, got {other:?}"),
        }
        let mut bind = pg(
            Side::Client,
            "Bind",
            serde_json::json!({"sql": "update orders set paid = $1"}),
        );
        assert!(matches!(
            plugin.on_message(&f, ts, &mut bind).await.unwrap(),
            MessageVerdict::PgError(_)
        ));
        for (t, sql) in [
            ("Query", "select * from orders"),
            ("Parse", "update orders set x = 1"),
        ] {
            let mut m = pg(Side::Client, t, serde_json::json!({ "sql": sql }));
            assert_eq!(
                plugin.on_message(&f, ts, &mut m).await.unwrap(),
                MessageVerdict::Continue
            );
        }
        plugin.on_stop().await.unwrap();
    });
    let r = sink.take();
    assert_eq!(r.last().unwrap().2["count"], 2, "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_report_delays_only_the_report() {
    let (plugin, _) = load("slow_report.lua", Mode::Proxy, &["slow-report.ms=1500"]);
    let f = flow(4, Mode::Proxy, Protocol::Postgres);
    let ts = Timestamp::from_secs_micros(1_700_000_000, 0);
    let started = tokio::time::Instant::now();
    let mut q = pg(
        Side::Client,
        "Query",
        serde_json::json!({"sql": "select * from monthly_report"}),
    );
    assert_eq!(
        plugin.on_message(&f, ts, &mut q).await.unwrap(),
        MessageVerdict::Continue
    );
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    let mut q = pg(
        Side::Client,
        "Query",
        serde_json::json!({"sql": "select 1"}),
    );
    plugin.on_message(&f, ts, &mut q).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}

#[test]
fn corrupt_column_rewrites_the_named_column_only() {
    let (plugin, _) = load("corrupt_column.lua", Mode::Proxy, &[]);
    let f = flow(5, Mode::Proxy, Protocol::Postgres);
    let ts = Timestamp::from_secs_micros(1_700_000_000, 0);
    block_on(async {
        let mut desc = pg(
            Side::Server,
            "RowDescription",
            serde_json::json!({"columns": [{"name": "id"}, {"name": "email"}]}),
        );
        plugin.on_message(&f, ts, &mut desc).await.unwrap();
        let mut row = pg(
            Side::Server,
            "DataRow",
            serde_json::json!({"values": ["1", "a@b.c"]}),
        );
        plugin.on_message(&f, ts, &mut row).await.unwrap();
        assert_eq!(
            row.fields["values"],
            serde_json::json!(["1", "corrupted@example.invalid"])
        );
        let mut null = pg(
            Side::Server,
            "DataRow",
            serde_json::json!({"values": ["2", null]}),
        );
        plugin.on_message(&f, ts, &mut null).await.unwrap();
        assert_eq!(
            null.fields["values"],
            serde_json::json!(["2", null]),
            "NULL stays NULL"
        );
    });
}
