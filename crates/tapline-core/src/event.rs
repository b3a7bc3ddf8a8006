//! Events: what tapline observed, in one model for both modes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::flow::{Flow, FlowEnd, FlowStats, Mode, Protocol, Side};
use crate::http::{HttpRequest, HttpResponse};
use crate::kind::Kind;
use crate::time::Timestamp;

/// One thing that happened, with when, in which mode, and (for flow events) on which flow.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened (capture: the packet's timestamp).
    pub ts: Timestamp,
    /// Proxy or capture.
    pub mode: Mode,
    /// The flow it belongs to; `None` for packets outside any flow and run-wide records.
    pub flow: Option<Arc<Flow>>,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// An event on `flow` at `ts`.
    pub fn on_flow(flow: &Arc<Flow>, ts: Timestamp, kind: EventKind) -> Self {
        Event {
            ts,
            mode: flow.mode,
            flow: Some(flow.clone()),
            kind,
        }
    }

    /// The event's kind, without its payload.
    pub fn kind(&self) -> Kind {
        self.kind.kind()
    }

    /// The event's kind name as used in JSON and syslog (`flow_start`, `http_request`, …).
    pub fn kind_name(&self) -> &'static str {
        self.kind.kind().name()
    }
}

/// The kinds of event, each with its payload.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// A connection opened.
    FlowStart,
    /// A connection closed, with its totals.
    FlowEnd {
        /// Bytes and packets each way.
        stats: FlowStats,
        /// How it ended.
        end: FlowEnd,
        /// How long it lasted.
        duration: Duration,
    },
    /// A captured packet (capture only).
    Packet(PacketInfo),
    /// Raw stream bytes, in order.
    Chunk(Chunk),
    /// A reassembly gap: `len` bytes from `from` were never seen.
    Gap {
        /// The side whose bytes are missing.
        from: Side,
        /// How many bytes are missing.
        len: u64,
    },
    /// An HTTP request.
    HttpRequest(HttpRequest),
    /// An HTTP response.
    HttpResponse(HttpResponse),
    /// A decoded application message.
    Message(Message),
    /// A request paired with its answer.
    Transaction(Transaction),
    /// A record emitted by a plugin.
    Record(Record),
    /// An alert raised by a plugin.
    Alert(Record),
}

impl EventKind {
    /// The kind, without the payload.
    pub fn kind(&self) -> Kind {
        match self {
            EventKind::FlowStart => Kind::FlowStart,
            EventKind::FlowEnd { .. } => Kind::FlowEnd,
            EventKind::Packet(_) => Kind::Packet,
            EventKind::Chunk(_) => Kind::Chunk,
            EventKind::Gap { .. } => Kind::Gap,
            EventKind::HttpRequest(_) => Kind::HttpRequest,
            EventKind::HttpResponse(_) => Kind::HttpResponse,
            EventKind::Message(_) => Kind::Message,
            EventKind::Transaction(_) => Kind::Transaction,
            EventKind::Record(_) => Kind::Record,
            EventKind::Alert(_) => Kind::Alert,
        }
    }

    /// The kind name as used in JSON and syslog.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// Raw stream bytes from one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Who sent them.
    pub from: Side,
    /// The bytes.
    pub data: Bytes,
}

/// A captured packet's summary and bytes.
#[derive(Debug, Clone, Default)]
pub struct PacketInfo {
    /// Length on the wire.
    pub len: u32,
    /// Length captured.
    pub caplen: u32,
    /// The whole frame as captured.
    pub data: Bytes,
    /// The transport payload (empty when none).
    pub payload: Bytes,
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port (TCP/UDP).
    pub dport: u16,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the IP protocol number.
    pub proto: String,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20).
    pub tcp_flags: u8,
}

/// A decoded application message (PostgreSQL first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// The protocol that framed it.
    pub protocol: Protocol,
    /// Who sent it.
    pub from: Side,
    /// The wire name: `Query`, `DataRow`, `ErrorResponse`, …
    #[serde(rename = "type")]
    pub type_name: String,
    /// Type-specific fields (`sql`, `columns`, `values` with `null` for SQL NULL, …).
    pub fields: serde_json::Value,
    /// The message's bytes on the wire.
    #[serde(skip)]
    pub raw: Bytes,
}

/// A request paired with its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Transaction {
    /// An HTTP request and its response (heads only; bodies were in the message events).
    Http {
        /// The request.
        request: Box<HttpRequest>,
        /// The response.
        response: Box<HttpResponse>,
        /// From the end of the request to the response head.
        latency: Duration,
    },
    /// A PostgreSQL statement and its outcome.
    Postgres(PgTransaction),
}

/// A PostgreSQL statement (simple Query, or Parse+Bind+Execute) and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PgTransaction {
    /// The statement text.
    pub sql: String,
    /// Bound parameters (extended protocol), `null` for SQL NULL.
    pub params: Vec<Option<String>>,
    /// Rows returned (DataRow count) or affected (from the command tag).
    pub rows: u64,
    /// The CommandComplete tag (`SELECT 1`, `INSERT 0 3`), empty on error.
    pub tag: String,
    /// SQLSTATE of the ErrorResponse, when it failed.
    pub error_code: Option<String>,
    /// The error's message, when it failed.
    pub error_message: Option<String>,
    /// From the statement to its completion.
    pub latency: Duration,
    /// Set when the outcome was a stage's (a rehearsed failure), not the server's.
    pub injected: Option<Injected>,
}

/// An outcome a stage made up in place of the server's (`tap.pg_error`, `--with-sql-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Injected {
    /// What was injected: `sql-error`.
    pub fault: &'static str,
    /// The stage that did it, as stats name it (`lua plugin retry`, `fault sql-error`).
    pub stage: String,
}

/// Severity of a plugin's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordLevel {
    /// `tap.emit`.
    Info,
    /// `tap.alert`.
    Alert,
}

/// A record or alert emitted by a plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The plugin's name.
    pub plugin: String,
    /// A short human message (alerts; may be empty for records).
    pub message: String,
    /// The plugin's fields, as a JSON object.
    pub fields: serde_json::Value,
}
