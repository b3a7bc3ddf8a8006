//! What a stage decides about an event it saw (applied in proxy mode, counted in capture mode).

use bytes::Bytes;

use crate::http::HttpResponse;

/// A stage's decision about a chunk of stream bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Forward the bytes as the next stage sees them.
    Pass,
    /// Forward these bytes instead (possibly empty; possibly releasing earlier held bytes).
    Replace(Bytes),
    /// Forward nothing now; the stage releases data later with a subsequent verdict.
    Hold,
    /// Close the flow, both sides, with a reason.
    Close(String),
}

impl ChunkVerdict {
    /// True for verdicts that end the chain for this event (hold, close).
    pub fn is_terminal(&self) -> bool {
        matches!(self, ChunkVerdict::Hold | ChunkVerdict::Close(_))
    }
}

/// A stage's decision about an HTTP request (edits are made in place on the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Go on with the (possibly modified) request.
    Continue,
    /// Answer the client with this response; the upstream is not contacted.
    Respond(HttpResponse),
    /// Close the client connection without an answer.
    Close(String),
}

/// A stage's decision about an HTTP response (edits are made in place on the response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// Go on with the (possibly modified) response.
    Continue,
    /// Send this response instead.
    Replace(HttpResponse),
    /// Close the client connection.
    Close(String),
}

/// An error a PostgreSQL client is answered with in place of the server's answer to one of
/// its messages (`tap.pg_error`, `--with-sql-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// `ERROR`, `FATAL`, …
    pub severity: String,
    /// The SQLSTATE, five characters.
    pub code: String,
    /// The primary message.
    pub message: String,
}

impl PgError {
    /// Checks a SQLSTATE: five ASCII digits or upper-case letters.
    pub fn valid_code(code: &str) -> bool {
        code.len() == 5
            && code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    }
}

/// A stage's decision about a decoded message (edits to its `fields` are made in place and
/// applied where the proxy frames messages before forwarding them: `psql` mappings). A
/// stage delays a message by awaiting before it answers, as it does any other event.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageVerdict {
    /// Go on with the (possibly edited) message.
    Continue,
    /// Answer the client's message with this error; the message never reaches the server.
    PgError(PgError),
    /// Close the connection, both sides, at this message.
    Close(String),
}
