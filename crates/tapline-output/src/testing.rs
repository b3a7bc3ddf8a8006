//! Sample events shared by the unit tests of every output.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tapline_core::{
    Event, EventKind, Flow, FlowEnd, FlowId, FlowStats, Headers, HttpRequest, HttpResponse,
    Message, Mode, PacketInfo, PgTransaction, Protocol, Record, Route, Side, Timestamp,
    Transaction,
};

/// 2026-11-21T06:39:45.123456Z
pub const TS: Timestamp = Timestamp(1_795_243_185_123_456);

/// Flow 7, proxy mode, forward-proxy HTTP, 127.0.0.1:51234 → 127.0.0.1:7070.
pub fn flow() -> Arc<Flow> {
    Arc::new(Flow {
        id: FlowId(7),
        uid: tapline_core::FlowUid::random(),
        mode: Mode::Proxy,
        protocol: Protocol::Http,
        route: Route::Forward,
        client: "127.0.0.1:51234".parse().unwrap(),
        server: "127.0.0.1:7070".parse().unwrap(),
        started: TS,
        tls: None,
    })
}

/// A postgres mapping flow.
pub fn pg_flow() -> Arc<Flow> {
    let mut f = (*flow()).clone();
    f.protocol = Protocol::Postgres;
    f.route = Route::Mapping;
    f.server = "127.0.0.1:5432".parse().unwrap();
    Arc::new(f)
}

/// An event of `kind` on [`flow`] at [`TS`].
pub fn event(kind: EventKind) -> Event {
    Event::on_flow(&flow(), TS, kind)
}

/// A flow end with some totals, 12.5 ms long.
pub fn flow_end(end: FlowEnd) -> EventKind {
    EventKind::FlowEnd {
        stats: FlowStats {
            bytes_from_client: 100,
            bytes_from_server: 2048,
            packets_from_client: 1,
            packets_from_server: 2,
        },
        end,
        duration: Duration::from_micros(12_500),
    }
}

/// `GET http://127.0.0.1:7070/bytes/10`.
pub fn request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/bytes/10".into(),
        url: Some("http://127.0.0.1:7070/bytes/10".into()),
        version: "HTTP/1.1".into(),
        headers: Headers(vec![
            ("Host".into(), "127.0.0.1:7070".into()),
            ("User-Agent".into(), "curl/8.0".into()),
        ]),
        ..Default::default()
    }
}

/// `200 OK`, 10 bytes, 1.2 ms after [`request`].
pub fn response() -> HttpResponse {
    let mut r = HttpResponse::new(
        200,
        Headers(vec![("Content-Length".into(), "10".into())]),
        Bytes::from_static(b"0123456789"),
    );
    r.request = Some(request().line());
    r.latency = Some(Duration::from_micros(1_200));
    r
}

/// A PostgreSQL `Query` message.
pub fn message() -> Message {
    Message {
        protocol: Protocol::Postgres,
        from: Side::Client,
        type_name: "Query".into(),
        fields: json!({ "sql": "select 1" }),
        raw: Bytes::from_static(b"Q\0\0\0\rselect 1\0"),
    }
}

/// A failed PostgreSQL statement.
pub fn pg_error() -> Transaction {
    Transaction::Postgres(PgTransaction {
        sql: "select * from nope".into(),
        error_code: Some("42P01".into()),
        error_message: Some("relation \"nope\" does not exist".into()),
        latency: Duration::from_micros(300),
        ..Default::default()
    })
}

/// A successful PostgreSQL statement returning one row.
pub fn pg_select() -> Transaction {
    Transaction::Postgres(PgTransaction {
        sql: "select\n  now()".into(),
        rows: 1,
        tag: "SELECT 1".into(),
        latency: Duration::from_micros(400),
        ..Default::default()
    })
}

/// The HTTP transaction of [`request`] and [`response`].
pub fn http_transaction() -> Transaction {
    Transaction::Http {
        request: Box::new(request()),
        response: Box::new(response()),
        latency: Duration::from_micros(1_200),
    }
}

/// A plugin's alert.
pub fn record() -> Record {
    Record {
        plugin: "ua-watch".into(),
        message: "scanner user agent".into(),
        fields: json!({ "ua": "pcap/1.0" }),
    }
}

/// A captured TCP packet summary.
pub fn packet() -> PacketInfo {
    PacketInfo {
        len: 74,
        caplen: 74,
        src: Some("127.0.0.1".parse().unwrap()),
        dst: Some("127.0.0.1".parse().unwrap()),
        sport: 51234,
        dport: 80,
        proto: "tcp".into(),
        tcp_flags: 0x18,
        payload: Bytes::from_static(b"GET"),
        ..Default::default()
    }
}
