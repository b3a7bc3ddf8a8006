//! The syslog sender against a real rsyslogd: RFC 5424 and 3164, over UDP and TCP, field by
//! field as rsyslog parsed them; and over TCP, messages queued while rsyslog is down arrive
//! once it is back.

#[path = "../../../tests/rsyslog/mod.rs"]
mod rsyslog;

use std::sync::Arc;
use std::time::Duration;

use rsyslog::Rsyslog;
use serde_json::json;
use tapline_core::{
    Event, EventKind, EventSink, Flow, FlowId, Mode, Protocol, Record, Route, Timestamp,
};
use tapline_output::syslog::{parse_kinds, SyslogConfig, SyslogFormat, SyslogSink, SyslogTarget};

const WAIT: Duration = Duration::from_secs(20);

fn flow() -> Arc<Flow> {
    Arc::new(Flow {
        id: FlowId(42),
        uid: tapline_core::FlowUid::random(),
        mode: Mode::Capture,
        protocol: Protocol::Http,
        route: Route::Capture,
        client: "127.0.0.1:40000".parse().unwrap(),
        server: "127.0.0.1:8080".parse().unwrap(),
        started: Timestamp::now(),
        tls: None,
    })
}

fn alert(n: u32) -> Event {
    Event::on_flow(
        &flow(),
        Timestamp::now(),
        EventKind::Alert(Record {
            plugin: "ua-watch".into(),
            message: format!("scanner {n}"),
            fields: json!({ "ua": "pcap/1.0", "n": n }),
        }),
    )
}

fn record(n: u32) -> Event {
    Event::on_flow(
        &flow(),
        Timestamp::now(),
        EventKind::Record(Record {
            plugin: "counter".into(),
            message: String::new(),
            fields: json!({ "n": n }),
        }),
    )
}

fn sink(url: &str, format: SyslogFormat) -> SyslogSink {
    let target: SyslogTarget = url.parse().unwrap();
    let mut config = SyslogConfig::new(target, format, parse_kinds::<&str>(&[]).unwrap());
    config.hostname = "tapline-test".into();
    SyslogSink::start(config).unwrap()
}

/// Sends an alert, a record and a flow start (not sent by default) in RFC 5424 and checks
/// every field rsyslog parsed.
fn rfc5424_over(url_of: fn(&Rsyslog) -> String) {
    let Some(rsyslog) = Rsyslog::start() else {
        return;
    };
    let sink = sink(&url_of(&rsyslog), SyslogFormat::Rfc5424);
    sink.emit(&alert(1));
    sink.emit(&Event::on_flow(
        &flow(),
        Timestamp::now(),
        EventKind::FlowStart,
    ));
    sink.emit(&record(2));
    sink.flush();
    let got = rsyslog.wait_fields(2, WAIT);
    let pid = std::process::id().to_string();
    let [pri, host, app, procid, msgid, sd, msg] = &got[0][..] else {
        panic!("{got:?}")
    };
    assert_eq!(pri, "12", "facility user, severity warning");
    assert_eq!(host, "tapline-test");
    assert_eq!(app, "tapline");
    assert_eq!(procid, &pid);
    assert_eq!(msgid, "alert");
    assert_eq!(
        sd,
        "[tapline@32473 kind=\"alert\" flow=\"42\" mode=\"capture\" protocol=\"http\" \
         client=\"127.0.0.1:40000\" server=\"127.0.0.1:8080\" plugin=\"ua-watch\"]\
         [fields@32473 n=\"1\" ua=\"pcap/1.0\"]"
    );
    assert_eq!(
        msg.trim(),
        "ALERT ua-watch http 127.0.0.1:40000 → 127.0.0.1:8080 scanner 1 n=1 ua=\"pcap/1.0\""
    );
    let [pri, _, _, _, msgid, sd, msg] = &got[1][..] else {
        panic!("{got:?}")
    };
    assert_eq!(pri, "14", "facility user, severity info");
    assert_eq!(msgid, "record");
    assert!(
        sd.contains("plugin=\"counter\"][fields@32473 n=\"2\"]"),
        "{sd}"
    );
    assert_eq!(
        msg.trim(),
        "record counter http 127.0.0.1:40000 → 127.0.0.1:8080 n=2"
    );
    assert_eq!(got.len(), 2, "flow_start is not sent by default: {got:?}");
    let raw = rsyslog.messages();
    assert!(
        raw[0].starts_with("<12>1 20") && raw[0].contains("Z tapline-test tapline "),
        "RFC 5424 header with an RFC 3339 UTC timestamp: {}",
        raw[0]
    );
    assert_eq!(
        sink.counters()
            .sent
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn rfc5424_over_udp() {
    rfc5424_over(Rsyslog::udp_url);
}

#[test]
fn rfc5424_over_tcp() {
    rfc5424_over(Rsyslog::tcp_url);
}

fn rfc3164_over(url_of: fn(&Rsyslog) -> String) {
    let Some(rsyslog) = Rsyslog::start() else {
        return;
    };
    let sink = sink(&url_of(&rsyslog), SyslogFormat::Rfc3164);
    sink.emit(&alert(3));
    sink.flush();
    let got = rsyslog.wait_fields(1, WAIT);
    let [pri, host, app, procid, _msgid, sd, msg] = &got[0][..] else {
        panic!("{got:?}")
    };
    assert_eq!(pri, "12");
    assert_eq!(host, "tapline-test");
    assert_eq!(app, "tapline");
    assert_eq!(procid, &std::process::id().to_string());
    assert_eq!(sd, "-", "no structured data in RFC 3164");
    assert_eq!(
        msg.trim(),
        "kind=alert flow=42 plugin=ua-watch ALERT ua-watch http 127.0.0.1:40000 → \
         127.0.0.1:8080 scanner 3 n=3 ua=\"pcap/1.0\""
    );
}

#[test]
fn rfc3164_over_udp() {
    rfc3164_over(Rsyslog::udp_url);
}

#[test]
fn rfc3164_over_tcp() {
    rfc3164_over(Rsyslog::tcp_url);
}

#[test]
fn tcp_messages_queued_while_rsyslog_is_down_arrive_when_it_returns() {
    let Some(mut rsyslog) = Rsyslog::start() else {
        return;
    };
    let sink = sink(&rsyslog.tcp_url(), SyslogFormat::Rfc5424);
    for n in 0..3 {
        sink.emit(&alert(n));
    }
    rsyslog.wait_fields(3, WAIT);
    rsyslog.stop();
    for n in 3..8 {
        sink.emit(&alert(n));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        sink.queued() > 0,
        "messages wait in the queue while rsyslog is down"
    );
    rsyslog.restart();
    let got = rsyslog.wait_fields(8, WAIT);
    let texts: Vec<String> = got.iter().map(|f| f[6].trim().to_string()).collect();
    for n in 0..8 {
        let needle = format!("scanner {n} ");
        assert_eq!(
            texts.iter().filter(|t| t.contains(&needle)).count(),
            1,
            "alert {n} arrives exactly once: {texts:#?}"
        );
    }
    sink.flush();
    let counters = sink.counters();
    assert_eq!(counters.sent.load(std::sync::atomic::Ordering::Relaxed), 8);
    assert_eq!(
        counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_full_queue_drops_and_counts() {
    // Nobody listens on this port: TCP connects fail, so messages stay queued.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target: SyslogTarget = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let mut config = SyslogConfig::new(
        target,
        SyslogFormat::Rfc5424,
        parse_kinds::<&str>(&[]).unwrap(),
    );
    config.queue = 4;
    let sink = SyslogSink::start(config).unwrap();
    for n in 0..10 {
        sink.emit(&alert(n));
    }
    let counters = sink.counters();
    assert_eq!(
        counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    sink.flush();
    assert_eq!(
        counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
        10,
        "what could not be delivered by the end is counted too"
    );
}
