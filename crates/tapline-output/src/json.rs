//! JSON lines: one object per event, with the field names of `docs/events.md`.
//!
//! Every object has `kind`, `ts` (RFC 3339, UTC, microseconds) and `mode`; flow events add
//! `flow` (the run-local id as a string), `flow_uid` (the flow's UUID), `route`, `protocol`,
//! `client`, `server` and, for flows that carried TLS, `tls`; then each kind adds
//! its own fields. Field names are a contract: new fields may be added, none renamed.

use std::time::Duration;

use base64::Engine;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};
use tapline_core::{
    Event, EventKind, HttpRequest, HttpResponse, PacketInfo, Timestamp, Transaction,
};

/// Appends `event` as one JSON object and a newline to `out`.
pub fn write_line(event: &Event, out: &mut Vec<u8>) {
    write(event, &[], false, out);
}

/// [`write_line`], with `http_request` and `http_response` events carrying their `body`
/// (as kept, up to `--body-limit`; see [`body`]) — `--json-bodies`.
pub fn write_line_with_bodies(event: &Event, out: &mut Vec<u8>) {
    write(event, &[], true, out);
}

/// Appends `event` as one JSON object and a newline to `out`, with the `extra` string fields
/// after its own (the export's `agent` and `event_id`).
pub fn write_line_with(event: &Event, extra: &[(&str, &str)], out: &mut Vec<u8>) {
    write(event, extra, false, out);
}

fn write(event: &Event, extra: &[(&str, &str)], bodies: bool, out: &mut Vec<u8>) {
    // Serializing plain strings, numbers and maps into a Vec cannot fail.
    let json = JsonEvent {
        event,
        bodies,
        extra,
        detail: None,
    };
    if serde_json::to_writer(&mut *out, &json).is_ok() {
        out.push(b'\n');
    }
}

/// `event` as the JSON object its line holds, and for an HTTP transaction what the line
/// leaves out: `request_ts` (when the request went out), `request_headers`,
/// `response_headers` (`[name, value]` pairs in wire order) and `request_body`,
/// `response_body` (at most `body_cap` bytes each; see [`body`]). HAR entries are made from
/// it; [`write_detailed`] writes the same object as text.
pub fn detailed(event: &Event, body_cap: usize) -> Value {
    serde_json::to_value(JsonEvent {
        event,
        bodies: false,
        extra: &[],
        detail: Some(body_cap),
    })
    .unwrap_or(Value::Null)
}

/// Appends [`detailed`]'s object as JSON text (no newline) to `out`, without building it
/// as a value first (the web view's rows).
pub fn write_detailed(event: &Event, body_cap: usize, out: &mut Vec<u8>) {
    let json = JsonEvent {
        event,
        bodies: false,
        extra: &[],
        detail: Some(body_cap),
    };
    let _ = serde_json::to_writer(out, &json);
}

/// The detail fields of an HTTP transaction (see [`detailed`]).
fn detail_fields<M: SerializeMap>(
    m: &mut M,
    event: &Event,
    body_cap: usize,
) -> Result<(), M::Error> {
    let EventKind::Transaction(Transaction::Http {
        request,
        response,
        latency,
    }) = &event.kind
    else {
        return Ok(());
    };
    let sent = event.ts.as_micros() - i64::try_from(latency.as_micros()).unwrap_or(0);
    m.serialize_entry("request_ts", &Timestamp(sent))?;
    m.serialize_entry("request_headers", &request.headers)?;
    m.serialize_entry("response_headers", &response.headers)?;
    for (name, bytes, truncated) in [
        ("request_body", &request.body, request.body_truncated),
        ("response_body", &response.body, response.body_truncated),
    ] {
        if !bytes.is_empty() {
            m.serialize_entry(name, &body(bytes, truncated, body_cap))?;
        }
    }
    Ok(())
}

/// A body as JSON: `{"text": …}` when it is UTF-8, else `{"base64": …}`, with `truncated`
/// when it holds only the first bytes (cut at capture, or here at `cap`).
pub fn body(bytes: &[u8], truncated: bool, cap: usize) -> Value {
    let kept = &bytes[..bytes.len().min(cap)];
    let truncated = truncated || kept.len() < bytes.len();
    match std::str::from_utf8(kept) {
        Ok(text) => json!({ "text": text, "truncated": truncated }),
        Err(_) => json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(kept),
            "truncated": truncated,
        }),
    }
}

/// A duration in milliseconds with microsecond precision, as every `*_ms` field carries it.
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// A flow's TLS: `sni`, `intercepted`, and the `client` and `server` legs tapline
/// terminated (`version`, `cipher`, `alpn`), `null` for a leg it did not.
struct JsonTls<'a>(&'a tapline_core::TlsInfo);

impl Serialize for JsonTls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tls = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("sni", &tls.sni)?;
        m.serialize_entry("intercepted", &tls.intercepted())?;
        m.serialize_entry("client", &tls.client)?;
        m.serialize_entry("server", &tls.server)?;
        m.end()
    }
}

/// Serializes an event in the JSON lines shape (`bodies`: HTTP messages with their body),
/// with `extra` string fields at the end.
struct JsonEvent<'a> {
    event: &'a Event,
    bodies: bool,
    extra: &'a [(&'a str, &'a str)],
    /// With the detail fields of [`detailed`], bodies cut at this many bytes.
    detail: Option<usize>,
}

impl Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", event.kind_name())?;
        m.serialize_entry("ts", &event.ts)?;
        m.serialize_entry("mode", event.mode.as_str())?;
        if let Some(flow) = &event.flow {
            m.serialize_entry("flow", &flow.id)?;
            m.serialize_entry("flow_uid", &flow.uid)?;
            m.serialize_entry("route", flow.route.as_str())?;
            m.serialize_entry("protocol", flow.protocol.as_str())?;
            m.serialize_entry("client", &flow.client)?;
            m.serialize_entry("server", &flow.server)?;
            if let Some(tls) = &flow.tls {
                m.serialize_entry("tls", &JsonTls(tls))?;
            }
        }
        match &event.kind {
            EventKind::FlowStart => {}
            EventKind::FlowEnd {
                stats,
                end,
                duration,
            } => {
                m.serialize_entry("bytes_from_client", &stats.bytes_from_client)?;
                m.serialize_entry("bytes_from_server", &stats.bytes_from_server)?;
                m.serialize_entry("packets_from_client", &stats.packets_from_client)?;
                m.serialize_entry("packets_from_server", &stats.packets_from_server)?;
                m.serialize_entry("duration_ms", &millis(*duration))?;
                m.serialize_entry("end", end.as_str())?;
                if let Some(reason) = end.reason() {
                    m.serialize_entry("reason", reason)?;
                }
            }
            EventKind::Packet(p) => packet_fields(&mut m, p)?,
            EventKind::Chunk(c) => {
                m.serialize_entry("from", c.from.as_str())?;
                m.serialize_entry("len", &c.data.len())?;
            }
            EventKind::Gap { from, len } => {
                m.serialize_entry("from", from.as_str())?;
                m.serialize_entry("len", len)?;
            }
            EventKind::HttpRequest(r) => {
                request_fields(&mut m, r)?;
                if self.bodies && !r.body.is_empty() {
                    m.serialize_entry("body", &body(&r.body, r.body_truncated, usize::MAX))?;
                }
            }
            EventKind::HttpResponse(r) => {
                response_fields(&mut m, r)?;
                if self.bodies && !r.body.is_empty() {
                    m.serialize_entry("body", &body(&r.body, r.body_truncated, usize::MAX))?;
                }
            }
            EventKind::Message(msg) => {
                m.serialize_entry("from", msg.from.as_str())?;
                m.serialize_entry("type", &msg.type_name)?;
                m.serialize_entry("fields", &msg.fields)?;
                m.serialize_entry("len", &msg.raw.len())?;
            }
            EventKind::Transaction(t) => transaction_fields(&mut m, t)?,
            EventKind::Record(r) | EventKind::Alert(r) => {
                m.serialize_entry("plugin", &r.plugin)?;
                m.serialize_entry("message", &r.message)?;
                m.serialize_entry("fields", &r.fields)?;
            }
        }
        if let Some(cap) = self.detail {
            detail_fields(&mut m, event, cap)?;
        }
        for (name, value) in self.extra {
            m.serialize_entry(name, value)?;
        }
        m.end()
    }
}

fn packet_fields<M: SerializeMap>(m: &mut M, p: &PacketInfo) -> Result<(), M::Error> {
    m.serialize_entry("len", &p.len)?;
    m.serialize_entry("caplen", &p.caplen)?;
    m.serialize_entry("src", &p.src)?;
    m.serialize_entry("dst", &p.dst)?;
    m.serialize_entry("sport", &p.sport)?;
    m.serialize_entry("dport", &p.dport)?;
    m.serialize_entry("proto", &p.proto)?;
    m.serialize_entry("tcp_flags", &p.tcp_flags)?;
    m.serialize_entry("payload_len", &p.payload.len())
}

fn request_fields<M: SerializeMap>(m: &mut M, r: &HttpRequest) -> Result<(), M::Error> {
    m.serialize_entry("method", &r.method)?;
    m.serialize_entry("path", &r.path)?;
    m.serialize_entry("url", &r.url)?;
    m.serialize_entry("version", &r.version)?;
    m.serialize_entry("headers", &r.headers)?;
    m.serialize_entry("body_len", &r.body_len)?;
    m.serialize_entry("body_truncated", &r.body_truncated)
}

fn response_fields<M: SerializeMap>(m: &mut M, r: &HttpResponse) -> Result<(), M::Error> {
    m.serialize_entry("status", &r.status)?;
    m.serialize_entry("reason", &r.reason)?;
    m.serialize_entry("version", &r.version)?;
    m.serialize_entry("headers", &r.headers)?;
    m.serialize_entry("body_len", &r.body_len)?;
    m.serialize_entry("body_truncated", &r.body_truncated)?;
    m.serialize_entry("latency_ms", &r.latency.map(millis))?;
    let request = r.request.as_ref();
    m.serialize_entry("method", &request.map(|q| q.method.as_str()))?;
    m.serialize_entry("path", &request.map(|q| q.path.as_str()))?;
    m.serialize_entry("url", &request.and_then(|q| q.url.as_deref()))
}

fn transaction_fields<M: SerializeMap>(m: &mut M, t: &Transaction) -> Result<(), M::Error> {
    match t {
        Transaction::Http {
            request,
            response,
            latency,
        } => {
            m.serialize_entry(
                "request",
                &HttpRequestSummary {
                    method: &request.method,
                    path: &request.path,
                    url: request.url.as_deref(),
                    version: &request.version,
                    body_len: request.body_len,
                },
            )?;
            m.serialize_entry(
                "response",
                &HttpResponseSummary {
                    status: response.status,
                    reason: &response.reason,
                    version: &response.version,
                    body_len: response.body_len,
                },
            )?;
            m.serialize_entry("latency_ms", &millis(*latency))
        }
        Transaction::Postgres(pg) => {
            m.serialize_entry(
                "request",
                &PgRequest {
                    sql: &pg.sql,
                    params: &pg.params,
                },
            )?;
            m.serialize_entry(
                "response",
                &PgResponse {
                    tag: &pg.tag,
                    rows: pg.rows,
                    error_code: pg.error_code.as_deref(),
                    error_message: pg.error_message.as_deref(),
                },
            )?;
            m.serialize_entry("latency_ms", &millis(pg.latency))?;
            m.serialize_entry("sql", &pg.sql)?;
            m.serialize_entry("params", &pg.params)?;
            m.serialize_entry("rows", &pg.rows)?;
            m.serialize_entry("tag", &pg.tag)?;
            m.serialize_entry("error_code", &pg.error_code)?;
            m.serialize_entry("error_message", &pg.error_message)?;
            if let Some(injected) = &pg.injected {
                m.serialize_entry("injected", injected.fault)?;
                m.serialize_entry("injected_by", &injected.stage)?;
            }
            Ok(())
        }
    }
}

/// The request side of an HTTP transaction.
#[derive(Serialize)]
struct HttpRequestSummary<'a> {
    method: &'a str,
    path: &'a str,
    url: Option<&'a str>,
    version: &'a str,
    body_len: u64,
}

/// The response side of an HTTP transaction.
#[derive(Serialize)]
struct HttpResponseSummary<'a> {
    status: u16,
    reason: &'a str,
    version: &'a str,
    body_len: u64,
}

/// The request side of a PostgreSQL transaction.
#[derive(Serialize)]
struct PgRequest<'a> {
    sql: &'a str,
    params: &'a [Option<String>],
}

/// The response side of a PostgreSQL transaction.
#[derive(Serialize)]
struct PgResponse<'a> {
    tag: &'a str,
    rows: u64,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::testing::*;

    /// The object's keys, sorted (serde_json's map is ordered by key).
    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(|k| k.as_str()).collect()
    }

    fn sorted(mut keys: Vec<&'static str>) -> Vec<&'static str> {
        keys.sort_unstable();
        keys
    }

    fn line(event: &Event) -> Value {
        let mut out = Vec::new();
        write_line(event, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    const FLOW_KEYS: [&str; 9] = [
        "kind", "ts", "mode", "flow", "flow_uid", "route", "protocol", "client", "server",
    ];

    fn with_flow_keys(extra: &[&'static str]) -> Vec<&'static str> {
        sorted(FLOW_KEYS.iter().chain(extra).copied().collect())
    }

    #[test]
    fn flow_events_carry_the_common_fields() {
        let start = event(EventKind::FlowStart);
        let v = line(&start);
        assert_eq!(keys(&v), with_flow_keys(&[]));
        assert_eq!(v["kind"], "flow_start");
        assert_eq!(v["ts"], "2026-11-21T06:39:45.123456Z");
        assert_eq!(v["mode"], "proxy");
        assert_eq!(v["flow"], "7");
        let uid = v["flow_uid"].as_str().unwrap();
        assert_eq!(uid, start.flow.as_ref().unwrap().uid.to_string());
        assert_eq!(
            (uid.len(), &uid[14..15]),
            (36, "4"),
            "UUID version 4 text: {uid}"
        );
        assert_eq!(v["protocol"], "http");
        assert_eq!(v["client"], "127.0.0.1:51234");
        assert_eq!(v["server"], "127.0.0.1:7070");
    }

    #[test]
    fn intercepted_flows_say_how_each_leg_was_encrypted() {
        let mut start = event(EventKind::FlowStart);
        let flow = start.flow.take().unwrap();
        let leg = tapline_core::TlsLeg {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            alpn: Some("http/1.1".into()),
        };
        let tls = tapline_core::TlsInfo {
            sni: Some("api.test".into()),
            client: Some(leg.clone()),
            server: None,
        };
        start.flow = Some(std::sync::Arc::new(
            std::sync::Arc::unwrap_or_clone(flow).with_tls(tls),
        ));
        let v = line(&start);
        assert_eq!(keys(&v), with_flow_keys(&["tls"]));
        assert_eq!(v["tls"]["sni"], "api.test");
        assert_eq!(v["tls"]["intercepted"], true);
        assert_eq!(v["tls"]["client"]["version"], "TLSv1.3");
        assert_eq!(v["tls"]["client"]["alpn"], "http/1.1");
        assert!(v["tls"]["server"].is_null());
    }

    #[test]
    fn flow_end_has_totals_and_reason_when_any() {
        let v = line(&event(flow_end(tapline_core::FlowEnd::Fin)));
        assert_eq!(
            keys(&v),
            with_flow_keys(&[
                "bytes_from_client",
                "bytes_from_server",
                "packets_from_client",
                "packets_from_server",
                "duration_ms",
                "end"
            ])
        );
        assert_eq!(v["bytes_from_server"], 2048);
        assert_eq!(v["duration_ms"], 12.5);
        assert_eq!(v["end"], "fin");
        let v = line(&event(flow_end(tapline_core::FlowEnd::ClosedByPlugin(
            "bad".into(),
        ))));
        assert_eq!(v["end"], "closed_by_plugin");
        assert_eq!(v["reason"], "bad");
    }

    #[test]
    fn http_request_and_response_shapes() {
        let v = line(&event(EventKind::HttpRequest(request())));
        assert_eq!(
            keys(&v),
            with_flow_keys(&[
                "method",
                "path",
                "url",
                "version",
                "headers",
                "body_len",
                "body_truncated"
            ])
        );
        assert_eq!(
            v["headers"][0],
            serde_json::json!(["Host", "127.0.0.1:7070"])
        );
        assert_eq!(v["url"], "http://127.0.0.1:7070/bytes/10");
        let v = line(&event(EventKind::HttpResponse(response())));
        assert_eq!(
            keys(&v),
            with_flow_keys(&[
                "status",
                "reason",
                "version",
                "headers",
                "body_len",
                "body_truncated",
                "latency_ms",
                "method",
                "path",
                "url"
            ])
        );
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.2);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/bytes/10");
    }

    #[test]
    fn message_transaction_record_shapes() {
        let v = line(&event(EventKind::Message(message())));
        assert_eq!(keys(&v), with_flow_keys(&["from", "type", "fields", "len"]));
        assert_eq!(v["type"], "Query");
        assert_eq!(v["fields"]["sql"], "select 1");

        let v = line(&event(EventKind::Transaction(pg_error())));
        assert_eq!(
            keys(&v),
            with_flow_keys(&[
                "request",
                "response",
                "latency_ms",
                "sql",
                "params",
                "rows",
                "tag",
                "error_code",
                "error_message"
            ])
        );
        assert_eq!(v["error_code"], "42P01");
        assert_eq!(v["request"]["sql"], "select * from nope");

        let v = line(&event(EventKind::Transaction(http_transaction())));
        assert_eq!(
            keys(&v),
            with_flow_keys(&["request", "response", "latency_ms"])
        );
        assert_eq!(v["response"]["status"], 200);

        let v = line(&event(EventKind::Alert(record())));
        assert_eq!(keys(&v), with_flow_keys(&["plugin", "message", "fields"]));
        assert_eq!(v["kind"], "alert");
        assert_eq!(v["fields"]["ua"], "pcap/1.0");
    }

    #[test]
    fn chunk_gap_and_packet_shapes() {
        let v = line(&event(EventKind::Chunk(tapline_core::Chunk {
            from: tapline_core::Side::Server,
            data: bytes::Bytes::from_static(b"abc"),
        })));
        assert_eq!(keys(&v), with_flow_keys(&["from", "len"]));
        assert_eq!(v["len"], 3);
        let v = line(&event(EventKind::Gap {
            from: tapline_core::Side::Client,
            len: 100,
        }));
        assert_eq!(keys(&v), with_flow_keys(&["from", "len"]));
        let mut packet = event(EventKind::Packet(packet()));
        packet.flow = None;
        let v = line(&packet);
        assert_eq!(
            keys(&v),
            sorted(vec![
                "kind",
                "ts",
                "mode",
                "len",
                "caplen",
                "src",
                "dst",
                "sport",
                "dport",
                "proto",
                "tcp_flags",
                "payload_len"
            ])
        );
        assert_eq!(v["src"], "127.0.0.1");
        assert_eq!(v["tcp_flags"], 0x18);
    }
}
