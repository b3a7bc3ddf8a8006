use tapline_decode::packet::tcp_flags::{ACK, FIN, PSH, SYN};

use super::*;

const REQ_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const REQ_C: &[u8] = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

/// Client ISN: its data starts at `CLIENT + 1`.
const CLIENT: u32 = 1000;
/// Server ISN: its data starts at `SERVER + 1`.
const SERVER: u32 = 5000;

/// A unit with its worker's side of things, and what each call produced.
struct Harness {
    unit: TcpUnit,
    budget: Budget,
    decode: DecodeConfig,
    chunks: bool,
}

impl Harness {
    fn new(server_port: u16) -> Self {
        Harness {
            unit: TcpUnit::new(40000, server_port),
            budget: Budget::new(1 << 20, 1 << 24),
            decode: DecodeConfig::default(),
            chunks: true,
        }
    }

    /// A unit past the handshake.
    fn connected(server_port: u16) -> Self {
        let mut h = Harness::new(server_port);
        assert!(h.send(Side::Client, CLIENT, SYN, b"").is_empty());
        assert!(h.send(Side::Server, SERVER, SYN | ACK, b"").is_empty());
        h
    }

    fn send_raw(&mut self, from: Side, seq: u32, flags: u8, data: &[u8]) -> Vec<StreamEvent> {
        let segment = Segment {
            seq,
            ack: 0,
            flags,
            payload: data,
        };
        let mut out = Vec::new();
        let mut env = Env {
            budget: &mut self.budget,
            decode: &self.decode,
            chunks: self.chunks,
        };
        self.unit
            .segment(from, &segment, Timestamp(1), &mut env, &mut out);
        out
    }

    fn send(&mut self, from: Side, seq: u32, flags: u8, data: &[u8]) -> Vec<String> {
        summary(self.send_raw(from, seq, flags, data))
    }

    fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut env = Env {
            budget: &mut self.budget,
            decode: &self.decode,
            chunks: self.chunks,
        };
        self.unit.finish(Timestamp(2), &mut env, &mut out);
        summary(out)
    }
}

/// The events as short lines.
fn summary(events: Vec<StreamEvent>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| match e {
            StreamEvent::Data { from, len, .. } => format!("data {} {len}", from.as_str()),
            StreamEvent::Gap { from, len } => format!("gap {} {len}", from.as_str()),
            StreamEvent::Protocol(p) => format!("protocol {p}"),
            StreamEvent::Decoded(EventKind::HttpRequest(r)) => {
                format!("request {} {}", r.method, r.path)
            }
            StreamEvent::Decoded(EventKind::HttpResponse(r)) => format!(
                "response {} {:?}{}",
                r.status,
                String::from_utf8_lossy(&r.body),
                if r.body_truncated { " truncated" } else { "" }
            ),
            StreamEvent::Decoded(other) => other.name().to_string(),
        })
        .collect()
}

fn len(data: &[u8]) -> u32 {
    data.len() as u32
}

#[test]
fn in_order_segments_give_the_streams_http_events() {
    let mut h = Harness::connected(80);
    assert_eq!(
        h.send(Side::Client, CLIENT + 1, PSH, REQ_A),
        ["data client 28", "protocol http", "request GET /a"]
    );
    assert_eq!(
        h.send(Side::Server, SERVER + 1, PSH, RESP),
        ["data server 40", "response 200 \"hi\"", "transaction"]
    );
    assert!(h.unit.closed().is_none());
    assert!(h.finish().is_empty(), "nothing pending");
}

#[test]
fn out_of_order_segments_give_the_same_events_in_stream_order() {
    let mut h = Harness::connected(80);
    let (head, tail) = REQ_A.split_at(10);
    assert!(
        h.send(Side::Client, CLIENT + 1 + len(head), PSH, tail)
            .is_empty(),
        "held until the hole fills"
    );
    assert_eq!(h.budget.counters.out_of_order, 1);
    assert_eq!(
        h.send(Side::Client, CLIENT + 1, PSH, head),
        [
            "data client 10",
            "protocol http",
            "data client 18",
            "request GET /a"
        ]
    );
    // A retransmission of the whole request is trimmed away.
    assert!(h.send(Side::Client, CLIENT + 1, PSH, REQ_A).is_empty());
    assert_eq!(h.budget.counters.duplicate_bytes, len(REQ_A) as u64);
    assert_eq!(
        h.send(Side::Server, SERVER + 1, PSH, RESP),
        ["data server 40", "response 200 \"hi\"", "transaction"]
    );
}

#[test]
fn a_gap_is_reported_and_the_decoder_resyncs_on_the_next_request() {
    let mut h = Harness::connected(80);
    // One direction may buffer 16 bytes: a segment past a hole gives the hole up at once.
    h.budget = Budget::new(16, 1 << 20);
    let lost: &[u8] = b"GET /b HTTP/1.1\r\nHo";
    let missing: &[u8] = b"st: x\r\n\r\n";
    let mut seq = CLIENT + 1;
    assert_eq!(
        h.send(Side::Client, seq, PSH, REQ_A),
        ["data client 28", "protocol http", "request GET /a"]
    );
    seq += len(REQ_A);
    assert_eq!(h.send(Side::Client, seq, PSH, lost), ["data client 19"]);
    seq += len(lost) + len(missing);
    assert_eq!(
        h.send(Side::Client, seq, PSH, REQ_C),
        ["gap client 9", "data client 28", "request GET /c"],
        "the half head of /b is dropped, /c is found"
    );
    assert_eq!(h.budget.counters.gaps, 1);
    assert_eq!(h.budget.counters.flow_limit_gaps, 1);
}

#[test]
fn a_gap_before_any_bytes_has_no_decoder_to_tell() {
    let mut h = Harness::connected(80);
    h.send(Side::Client, CLIENT + 11, PSH, REQ_A);
    assert_eq!(
        h.finish(),
        [
            "gap client 10",
            "data client 28",
            "protocol http",
            "request GET /a"
        ]
    );
}

#[test]
fn finish_flushes_a_close_delimited_body() {
    let mut h = Harness::connected(80);
    h.send(Side::Client, CLIENT + 1, PSH, REQ_A);
    let head: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
    let mut seq = SERVER + 1;
    assert_eq!(h.send(Side::Server, seq, PSH, head), ["data server 38"]);
    seq += len(head);
    assert_eq!(
        h.send(Side::Server, seq, PSH | FIN, b"until close"),
        ["data server 11"],
        "no length: the body ends with the connection"
    );
    assert!(h.unit.closed().is_none(), "only the server has closed");
    h.send(Side::Client, CLIENT + 1 + len(REQ_A), FIN | ACK, b"");
    assert_eq!(h.unit.closed(), Some(Closed::Fin));
    assert_eq!(h.finish(), ["response 200 \"until close\"", "transaction"]);
}

#[test]
fn the_protocol_is_reported_once_and_an_opaque_flow_stops_decoding() {
    // No port hint: the bytes decide.
    let mut h = Harness::connected(7000);
    assert_eq!(
        h.send(Side::Client, CLIENT + 1, PSH, REQ_A),
        ["data client 28", "protocol http", "request GET /a"]
    );
    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let mut seq = CLIENT + 1 + len(REQ_A);
    assert_eq!(
        h.send(Side::Client, seq, PSH, upgrade),
        [
            format!("data client {}", upgrade.len()),
            "request GET /ws".into()
        ],
        "no second protocol event"
    );
    seq += len(upgrade);
    let switched: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let mut server = SERVER + 1;
    h.send(Side::Server, server, PSH, RESP);
    server += len(RESP);
    assert_eq!(
        h.send(Side::Server, server, PSH, switched),
        ["data server 56", "response 101 \"\"", "transaction"]
    );
    assert!(h.unit.decoding.opaque && h.unit.decoding.decoder.is_none());
    // Past the upgrade: bytes only, still counted.
    assert_eq!(
        h.send(Side::Client, seq, PSH, b"\x81\x05hello"),
        ["data client 7"]
    );
    assert!(h.finish().is_empty());
}

#[test]
fn postgres_turning_to_tls_is_a_second_protocol_change() {
    let mut h = Harness::connected(5432);
    let ssl_request = [0, 0, 0, 8, 4, 210, 22, 47];
    assert_eq!(
        h.send(Side::Client, CLIENT + 1, PSH, &ssl_request),
        ["data client 8", "protocol postgres", "message"]
    );
    assert_eq!(
        h.send(Side::Server, SERVER + 1, PSH, b"S"),
        ["data server 1", "protocol tls", "message"]
    );
    assert!(h.unit.decoding.decoder.is_none(), "dropped once opaque");
    assert_eq!(
        h.send(Side::Client, CLIENT + 9, PSH, b"\x16\x03\x01"),
        ["data client 3"]
    );
}

#[test]
fn bytes_are_copied_only_when_chunks_may_be_wanted() {
    let mut h = Harness::connected(80);
    h.chunks = false;
    let (head, tail) = REQ_A.split_at(10);
    h.send(Side::Client, CLIENT + 1 + len(head), PSH, tail);
    let copied: Vec<(usize, bool)> = h
        .send_raw(Side::Client, CLIENT + 1, PSH, head)
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Data { len, bytes, .. } => Some((len, bytes.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(
        copied,
        [(10, false), (18, true)],
        "after the protocol changed, the caller asks again"
    );
    let later = h.send_raw(Side::Server, SERVER + 1, PSH, RESP);
    assert!(matches!(later[0], StreamEvent::Data { bytes: None, .. }));
    h.chunks = true;
    match &h.send_raw(Side::Client, CLIENT + 1 + len(REQ_A), PSH, REQ_C)[0] {
        StreamEvent::Data {
            bytes: Some(bytes), ..
        } => assert_eq!(&bytes[..], REQ_C),
        other => panic!("{other:?}"),
    }
}
