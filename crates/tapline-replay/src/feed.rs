//! What a source hands the engine: one captured connection's requests, messages and the
//! outcomes the capture saw, in that connection's order.

use std::time::Duration;

use bytes::Bytes;
use tapline_core::{HttpRequest, PgTransaction, Timestamp};

/// A captured connection, as its source numbers it.
pub type ConnId = u64;

/// One thing a source read.
#[derive(Debug)]
pub enum Feed {
    /// A complete HTTP request sent on `conn` at `ts` (with its body as kept).
    HttpRequest {
        /// The connection.
        conn: ConnId,
        /// When it was sent.
        ts: Timestamp,
        /// The request.
        request: Box<HttpRequest>,
    },
    /// The captured answer to the oldest unanswered request on `conn`.
    HttpResponse {
        /// The connection.
        conn: ConnId,
        /// What the capture saw.
        outcome: HttpOutcome,
    },
    /// A PostgreSQL client message on `conn` at `ts`.
    PgMessage {
        /// The connection.
        conn: ConnId,
        /// When it was sent.
        ts: Timestamp,
        /// The message.
        message: PgMessage,
    },
    /// A statement's outcome as the capture saw it on `conn`.
    PgOutcome {
        /// The connection.
        conn: ConnId,
        /// The statement and how it ended.
        tx: Box<PgTransaction>,
    },
    /// `conn` ended: nothing more comes for it.
    End {
        /// The connection.
        conn: ConnId,
    },
}

/// An HTTP answer, captured or replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOutcome {
    /// Status code.
    pub status: u16,
    /// Body length (de-chunked).
    pub body_len: u64,
    /// From the request's end to the response head, when known.
    pub latency: Option<Duration>,
}

/// A PostgreSQL frontend message as captured.
#[derive(Debug, Clone)]
pub struct PgMessage {
    /// The wire name (`Query`, `Parse`, `Bind`, `CopyData`, `StartupMessage`, …).
    pub type_name: String,
    /// The message's bytes on the wire (tag, length, body), sent again as they are.
    pub raw: Bytes,
    /// The statement text it carries or names (`Query`, `Parse`; `Bind` and `Execute` when
    /// the decoder knew their statement), for `--filter-sql`.
    pub sql: Option<String>,
    /// A `StartupMessage`'s parameters (`user`, `database`, `application_name`, …).
    pub parameters: Vec<(String, String)>,
}

impl PgMessage {
    /// A message from its decoded `type` and `fields` and its raw bytes.
    pub fn from_decoded(type_name: &str, fields: &serde_json::Value, raw: Bytes) -> PgMessage {
        let sql = fields.get("sql").and_then(|s| s.as_str()).map(String::from);
        let parameters = fields
            .get("parameters")
            .and_then(|p| p.as_object())
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        PgMessage {
            type_name: type_name.to_string(),
            raw,
            sql,
            parameters,
        }
    }
}
