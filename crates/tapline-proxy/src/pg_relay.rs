//! A PostgreSQL session relayed message by message, for flows whose stages take verdicts on
//! messages. Each whole message is decoded, run through the stages, and forwarded as they
//! leave it: unchanged, edited (only the edited values re-encoded), later (a stage that
//! delays awaits before answering), not at all (the connection closes), or, for a client
//! message answered with an error, replaced by a statement the server rejects at once: a
//! `Query` or an unnamed `Parse` of a marker word. The server itself then skips to the next
//! `Sync`, aborts an open transaction block and answers `ReadyForQuery` with the right
//! status, so the session never desynchronises, in the simple or the extended protocol; its
//! syntax error for the marker is swapped for the stage's error on the way back, and the
//! statement the client sent never runs.
//!
//! Bytes that do not frame as messages (an over-long message, lost framing, TLS the proxy
//! does not hold) go on as they come, decoded after the fact and observed only.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;

use bytes::{Bytes, BytesMut};
use tapline_core::{
    Chunk, Dispatch, EventKind, FlowEnd, FlowStats, Injected, Kind, MessageVerdict, PgError, Side,
    Timestamp,
};
use tapline_decode::pgsql::{encode, Frame};
use tapline_decode::FlowDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::conn::Conn;
use crate::context::Shared;
use crate::relay::{carry, end_of, write_out, Activity, Counters, Directions, Half};

/// Bytes read per call.
const READ_SIZE: usize = 16 * 1024;
/// The word the server is sent in place of a failed statement; its syntax error names it.
const MARKER: &str = "tapline_injected_error_";
/// Injected errors waiting for the server's answer, at most (older ones were skipped by the
/// server after an earlier error and are forgotten).
const MAX_PENDING: usize = 64;

/// Relays a PostgreSQL session message by message until both sides close, one fails, a
/// stage closes it, it idles out or the run is forced to stop.
pub(crate) async fn relay_messages<C: Conn, S: Conn>(
    ctx: &Shared,
    dispatch: &Dispatch,
    client: &mut C,
    server: &mut S,
    first: Option<Chunk>,
    decoder: FlowDecoder,
) -> (FlowStats, FlowEnd) {
    let session = Session {
        dispatch,
        observing: dispatch.observing(),
        sink_reads: dispatch.pipeline().sink().wants_details(Kind::Message),
        state: Mutex::new(State {
            decoder,
            injections: Injections::default(),
        }),
        stats: Counters::default(),
        activity: Activity::new(),
    };
    let end = carry(ctx, &session, &session.activity, client, server, first).await;
    let mut decoder = session.state.into_inner().decoder;
    let mut events = Vec::new();
    let ts = Timestamp::now();
    decoder.finish(ts, &mut events);
    for kind in events {
        session.observing.decoded(ts, kind).await;
    }
    (session.stats.snapshot(), end)
}

/// What both directions of a session share.
struct Session<'d> {
    dispatch: &'d Dispatch,
    /// For events of bytes that went on before they were decoded.
    observing: Dispatch,
    /// An output reads messages' fields (else only the messages a stage judges are built).
    sink_reads: bool,
    /// Held while a message is decoded and judged, never while bytes are written.
    state: Mutex<State>,
    stats: Counters,
    activity: Activity,
}

/// What the directions take turns at.
struct State {
    /// One decoder for both directions (it pairs statements with their answers).
    decoder: FlowDecoder,
    injections: Injections,
}

impl Directions for Session<'_> {
    fn pump<R, W>(
        &self,
        from: Side,
        reader: R,
        writer: W,
        first: Option<Bytes>,
    ) -> impl Future<Output = Result<(), FlowEnd>> + Send
    where
        R: AsyncRead + Unpin + Half + Send,
        W: AsyncWrite + Unpin + Half + Send,
    {
        self.carry(from, reader, writer, first)
    }
}

impl Session<'_> {
    /// Carries `from`'s messages to the other side until EOF, then half-closes it.
    async fn carry<R, W>(
        &self,
        from: Side,
        mut reader: R,
        mut writer: W,
        first: Option<Bytes>,
    ) -> Result<(), FlowEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        if let Some(data) = first {
            self.stats.add(from, data.len());
            buf.extend_from_slice(&data);
        }
        let mut out = Vec::new();
        loop {
            let judged = self.judge(from, &mut buf, &mut out).await;
            if !out.is_empty() {
                write_out(&mut writer, &out).await?;
                out.clear();
            }
            judged?;
            buf.reserve(READ_SIZE);
            let n = reader.read_buf(&mut buf).await.map_err(end_of)?;
            if n == 0 {
                break;
            }
            self.stats.add(from, n);
            self.activity.touch();
        }
        if !buf.is_empty() {
            // A message cut short by the sender's close: on as it came.
            let rest = buf.split().freeze();
            write_out(&mut writer, &rest).await?;
            self.raw(from, &rest).await;
        }
        // The peer may already be gone; the other direction reports that.
        let _ = writer.shutdown().await;
        Ok(())
    }

    /// Takes the whole messages at the start of `buf` through the stages, appending what to
    /// forward to `out`; an error means the flow closes (after `out` is written).
    async fn judge(
        &self,
        from: Side,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<(), FlowEnd> {
        let ts = Timestamp::now();
        let mut state = self.state.lock().await;
        loop {
            match state.decoder.pg_frame(from, buf) {
                Frame::NeedMore => return Ok(()),
                Frame::Raw => {
                    let data = buf.split().freeze();
                    out.extend_from_slice(&data);
                    let mut events = Vec::new();
                    state.decoder.feed(from, ts, &data, &mut events);
                    drop(state);
                    for kind in events {
                        self.observing.decoded(ts, kind).await;
                    }
                    return Ok(());
                }
                Frame::Whole(n) => {
                    let msg = buf.split_to(n);
                    self.message(&mut state, from, ts, &msg, out).await?;
                }
            }
        }
    }

    /// Decodes one whole message (read at `ts`), runs it through the stages and appends what they leave of
    /// it to `out`.
    async fn message(
        &self,
        state: &mut State,
        from: Side,
        ts: Timestamp,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FlowEnd> {
        let mut msg = Cow::Borrowed(msg);
        if from == Side::Server {
            if let Some((error, stage)) = state.injections.answer(&msg) {
                state.decoder.inject_next(Injected {
                    fault: "sql-error",
                    stage,
                });
                msg = Cow::Owned(encode::error_response(&error));
            }
        }
        // Only the messages some stage judges go through the stages, and only those and the
        // ones an output reads get their fields built.
        let judged = self
            .dispatch
            .wants_message(from, state.decoder.pg_message_type(from, &msg));
        let mut events = Vec::new();
        let fields = judged || self.sink_reads;
        state
            .decoder
            .feed_pg_message(from, ts, &msg, fields, &mut events);
        let mut forward: Option<Vec<u8>> = None;
        let mut close = None;
        for kind in events {
            let EventKind::Message(mut m) = kind else {
                self.dispatch.decoded(ts, kind).await;
                continue;
            };
            if !judged {
                self.dispatch.event(ts, EventKind::Message(m)).await;
                continue;
            }
            let before = editable(&m.type_name).then(|| m.fields.clone());
            match self.dispatch.message(ts, &mut m).await {
                (MessageVerdict::Continue, _) => {
                    if !m.raw.is_empty() && m.raw[..] != msg[..] {
                        // A stage replaced the bytes (gRPC `replace_raw`).
                        forward = Some(m.raw.to_vec());
                    } else if let Some(before) = &before {
                        forward = encode::edited(&msg, before, &m).or(forward);
                    }
                }
                (MessageVerdict::PgError(error), by) if from == Side::Client => {
                    match failable(&m.type_name) {
                        true => {
                            let by = by.unwrap_or_default();
                            forward = Some(state.injections.stand_in(&m.type_name, error, by));
                        }
                        false => ignored(&m.type_name),
                    }
                }
                (MessageVerdict::PgError(_), _) => ignored(&m.type_name),
                (MessageVerdict::Close(reason), _) => close = Some(reason),
            }
            self.dispatch.event(ts, EventKind::Message(m)).await;
        }
        if let Some(reason) = close {
            return Err(FlowEnd::ClosedByPlugin(reason));
        }
        out.extend_from_slice(forward.as_deref().unwrap_or(&msg));
        Ok(())
    }

    /// Feeds bytes that went on unjudged to the decoder; their events are observed.
    async fn raw(&self, from: Side, data: &[u8]) {
        let ts = Timestamp::now();
        let mut events = Vec::new();
        self.state
            .lock()
            .await
            .decoder
            .feed(from, ts, data, &mut events);
        for kind in events {
            self.observing.decoded(ts, kind).await;
        }
    }
}

/// Message types whose edits are applied (see [`encode::edited`]).
fn editable(type_name: &str) -> bool {
    matches!(
        type_name,
        "Query" | "Parse" | "Bind" | "DataRow" | "CommandComplete"
    )
}

/// Client messages an error can answer (the server answers them, or skips them after an
/// error, until `Sync`).
fn failable(type_name: &str) -> bool {
    matches!(
        type_name,
        "Query" | "Parse" | "Bind" | "Execute" | "Describe" | "Close"
    )
}

/// An error verdict on a message no error can answer: passed on, said once.
fn ignored(type_name: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "an error verdict on a PostgreSQL {type_name} was ignored: errors answer the \
             client's Query, Parse, Bind, Execute, Describe or Close"
        );
    }
}

/// Errors injected in place of client messages, waiting for the server's rejection of the
/// stand-in statement sent instead.
#[derive(Default)]
struct Injections {
    next: u64,
    pending: VecDeque<(u64, PgError, String)>,
}

impl Injections {
    /// The statement sent in place of a `type_name` message answered with `error` by `stage`.
    fn stand_in(&mut self, type_name: &str, error: PgError, stage: String) -> Vec<u8> {
        let id = self.next;
        self.next += 1;
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((id, error, stage));
        let word = format!("{MARKER}{id}");
        match type_name {
            "Query" => encode::query(&word),
            _ => encode::parse_unnamed(&word),
        }
    }

    /// When `msg` is the server's error for a stand-in, the error to answer with instead
    /// and the stage's name; stand-ins sent before it were skipped by the server.
    fn answer(&mut self, msg: &[u8]) -> Option<(PgError, String)> {
        if msg.first() != Some(&b'E') || self.pending.is_empty() {
            return None;
        }
        let at = msg
            .windows(MARKER.len())
            .position(|w| w == MARKER.as_bytes())?;
        let digits = &msg[at + MARKER.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        let id: u64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        while let Some((first, ..)) = self.pending.front() {
            if *first > id {
                return None;
            }
            let (first, error, stage) = self.pending.pop_front()?;
            if first == id {
                return Some((error, stage));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> PgError {
        PgError {
            severity: "ERROR".into(),
            code: code.into(),
            message: "injected".into(),
        }
    }

    fn server_error_for(word: &str) -> Vec<u8> {
        encode::error_response(&PgError {
            severity: "ERROR".into(),
            code: "42601".into(),
            message: format!("syntax error at or near \"{word}\""),
        })
    }

    #[test]
    fn the_servers_rejection_of_a_stand_in_is_answered_with_the_stages_error() {
        let mut inj = Injections::default();
        let q = inj.stand_in("Query", error("40001"), "lua plugin a".into());
        assert_eq!(q[0], b'Q');
        let p = inj.stand_in("Bind", error("40P01"), "fault sql-error".into());
        assert_eq!(p[0], b'P');
        // A real error is not touched.
        assert!(inj.answer(&server_error_for("selec")).is_none());
        // The first stand-in was skipped by the server (an earlier error): forgotten.
        let (e, stage) = inj
            .answer(&server_error_for("tapline_injected_error_1"))
            .unwrap();
        assert_eq!(
            (e.code.as_str(), stage.as_str()),
            ("40P01", "fault sql-error")
        );
        assert!(inj
            .answer(&server_error_for("tapline_injected_error_0"))
            .is_none());
    }
}
