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
