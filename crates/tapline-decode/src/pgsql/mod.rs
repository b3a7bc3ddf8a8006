//! PostgreSQL frontend/backend protocol 3.0 decoder, both directions of one connection.
//!
//! Framing is done here: untyped start-up packets (StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest), the server's one-byte answer to an encryption request
//! (`S`/`G` make the connection TLS and opaque; `N` lets the client start up in clear), then
//! typed messages (tag, length). Messages split across reads are buffered up to
//! [`MAX_MESSAGE`] bytes; a longer one is reported with its length and skipped without being
//! buffered, and a length that cannot be right (under 4, over 1 GiB, or an unknown tag) makes
//! that side resynchronise on the next plausible header. Nothing is ever allocated from a
//! length read off the wire.
//!
//! Backend bodies are parsed by postgres-protocol (module `backend`); frontend bodies by hand
//! (module `frontend`), because postgres-protocol has no frontend parser.
//!
//! # Message fields (`message` events, `type` is the wire name)
//!
//! | type | fields |
//! |---|---|
//! | `StartupMessage` | `protocol_version` (`"3.0"`), `parameters` (object: `user`, `database`, …) |
//! | `SSLRequest`, `GSSENCRequest` | — ; the server's one-byte answer is `EncryptionResponse` {`accepted`, `answer`} |
//! | `CancelRequest`, `BackendKeyData` | `process_id`, `secret_key` |
//! | `Query` | `sql` |
//! | `Parse` | `statement`, `sql`, `param_types` (OIDs) |
//! | `Bind` | `portal`, `statement`, `formats`, `params` (text, `\x…` hex for binary, `null` for NULL), `result_formats`, `sql` (of the statement, when its `Parse` was seen) |
//! | `Describe`, `Close` | `kind` (`statement`/`portal`), `name` |
//! | `Execute` | `portal`, `max_rows`, `sql` (of the portal's statement, when known) |
//! | `Sync`, `Flush`, `Terminate`, `CopyDone`, `NoData`, `ParseComplete`, `BindComplete`, `CloseComplete`, `PortalSuspended`, `EmptyQueryResponse`, `AuthenticationOk` … | — |
//! | `CopyData`, `PasswordMessage`, `SASLResponse`, `GSSResponse` | `length` (the secret stays in `raw`) |
//! | `SASLInitialResponse` | `mechanism`, `length` |
//! | `CopyFail` | `message` |
//! | `AuthenticationSASL` | `mechanisms`; `AuthenticationMD5Password`: `salt` (hex); SASL continue/final: `length` |
//! | `ParameterStatus` | `name`, `value` |
//! | `RowDescription` | `columns`: [{`name`, `table_oid`, `column`, `type_oid`, `type_size`, `type_modifier`, `format`}] |
//! | `DataRow` | `values`: text (binary columns as `\x…` hex, each cut at [`MAX_VALUE`] bytes), `null` for SQL NULL |
//! | `CommandComplete` | `tag` |
//! | `ErrorResponse`, `NoticeResponse` | every field by name: `severity`, `severity_nonlocalized`, `code`, `message`, `detail`, `hint`, `position`, `internal_position`, `internal_query`, `where`, `schema`, `table`, `column`, `data_type`, `constraint`, `file`, `line`, `routine` (unknown codes by their letter) |
//! | `ReadyForQuery` | `status` (`I`, `T`, `E`) |
//! | `ParameterDescription` | `types` (OIDs) |
//! | `CopyInResponse`, `CopyOutResponse`, `CopyBothResponse` | `format`, `column_formats` |
//! | `NotificationResponse` | `process_id`, `channel`, `payload` |
//!
//! A body that does not fit its type's layout gives `{"malformed": …}`; a message longer
//! than [`MAX_MESSAGE`] gives `{"length": N, "truncated": true}` with its first bytes as `raw`.

mod backend;
pub mod encode;
mod framing;
mod frontend;
mod wire;

use bytes::Bytes;
use serde_json::Value;
use tapline_core::{EventKind, Injected, Message, Protocol, Side, Timestamp, Transaction};

use crate::flow_decoder::feed_buffered;
use crate::transaction::PgTracker;
pub use framing::Frame;
pub(crate) use frontend::untyped_code;
use wire::be32;
pub(crate) use wire::{value_text, Reader};

/// Largest message buffered whole; longer ones are summarised and skipped.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Longest untyped start-up packet accepted.
const MAX_STARTUP: u32 = 10_000;
/// No real message is this long (the server's own limit is 1 GiB).
const MAX_SANE: u32 = 1 << 30;
/// Longest text kept per DataRow value or Bind parameter.
pub const MAX_VALUE: usize = 1024;
/// Bytes of a skipped (over-long) message kept as its `raw`.
const RAW_PREFIX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// (Client) an untyped start-up packet comes next.
    Startup,
    /// (Server) the one-byte answer to SSLRequest/GSSENCRequest comes next.
    EncryptionAnswer,
    /// Typed messages.
    Typed,
    /// Skipping the rest of an over-long message.
    Skip(u64),
    /// Framing lost: looking for the next plausible header.
    Resync,
    /// Encrypted, or ended.
    Opaque,
}

#[derive(Debug)]
struct Stream {
    buf: Vec<u8>,
    state: State,
}

/// Decodes PostgreSQL in both directions of one connection into `message` and
/// `transaction` events.
#[derive(Debug)]
pub struct PgDecoder {
    client: Stream,
    server: Stream,
    tracker: PgTracker,
    /// Last Authentication request code (names the client's `p` messages).
    auth: i32,
    /// Column formats of the last RowDescription.
    formats: Vec<i16>,
    tls: bool,
    /// Whether messages carry their fields and raw bytes (see `DecodeConfig::message_fields`).
    fields: bool,
}

impl Default for PgDecoder {
    fn default() -> Self {
        PgDecoder {
            client: Stream {
                buf: Vec::new(),
                state: State::Startup,
            },
            server: Stream {
                buf: Vec::new(),
                state: State::Typed,
            },
            tracker: PgTracker::default(),
            auth: -1,
            formats: Vec::new(),
            tls: false,
            fields: true,
        }
    }
}

impl PgDecoder {
    /// A decoder for a connection seen from its start (or mid-way: a client that does not
    /// begin with a start-up packet is read as typed messages).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose `message` events carry their fields and raw bytes only when `fields`
    /// (transactions are the same either way).
    pub fn with_fields(fields: bool) -> Self {
        PgDecoder {
            fields,
            ..Self::default()
        }
    }

    /// True once the connection switched to TLS/GSS encryption (reported as `tls`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The next failed statement's error is a stage's (see [`Frame`]): its transaction
    /// says so.
    pub fn inject_next(&mut self, injected: Injected) {
        self.tracker.inject_next(injected);
    }

    /// Feeds in-order bytes from `side` received at `ts`.
    pub fn feed(&mut self, side: Side, ts: Timestamp, data: &[u8], out: &mut Vec<EventKind>) {
        let buf = std::mem::take(&mut self.stream(side).buf);
        let mut buf = feed_buffered(buf, data, |input| self.run(side, ts, input, out));
        let stream = self.stream(side);
        if stream.state == State::Opaque {
            buf = Vec::new();
        }
        stream.buf = buf;
    }

    /// `len` bytes from `side` were lost (capture gap).
    pub fn gap(&mut self, side: Side, len: u64) {
        let stream = self.stream(side);
        match stream.state {
            State::Opaque => {}
            State::Skip(rest) if len <= rest && stream.buf.is_empty() => {
                stream.state = State::Skip(rest - len);
            }
            _ => {
                tracing::debug!(side = side.as_str(), len, "pgsql: gap, resyncing");
                stream.buf.clear();
                stream.state = State::Resync;
            }
        }
    }

    /// The connection ended.
    pub fn finish(&mut self) {
        for side in [Side::Client, Side::Server] {
            let stream = self.stream(side);
            stream.state = State::Opaque;
            stream.buf = Vec::new();
        }
    }

    fn stream(&mut self, side: Side) -> &mut Stream {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// Decodes as much of `input` as possible; returns the bytes consumed.
    fn run(&mut self, side: Side, ts: Timestamp, input: &[u8], out: &mut Vec<EventKind>) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match self.stream(side).state {
                State::Opaque => return input.len(),
                State::Skip(left) => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    self.stream(side).state = match left - take {
                        0 => State::Typed,
                        n => State::Skip(n),
                    };
                }
                State::Resync => match find_header(side, rest) {
                    Some(at) => {
                        pos += at;
                        self.stream(side).state = State::Typed;
                    }
                    None => return input.len() - rest.len().min(4),
                },
                State::EncryptionAnswer => {
                    let answer = rest[0];
                    self.server.state = State::Typed;
                    if matches!(answer, b'S' | b'G' | b'N') {
                        pos += 1;
                        let accepted = answer != b'N';
                        self.emit(
                            side,
                            "EncryptionResponse",
                            serde_json::json!({
                                "accepted": accepted,
                                "answer": (answer as char).to_string(),
                            }),
                            &rest[..1],
                            out,
                        );
                        if accepted {
                            self.tls = true;
                            self.client.state = State::Opaque;
                            self.server.state = State::Opaque;
                            return input.len();
                        }
                    }
                    // Anything else (an old server's ErrorResponse) is read as typed.
                }
                State::Startup => {
                    if rest.len() < 8 {
                        return pos;
                    }
                    let len = be32(rest);
                    let code = be32(&rest[4..]);
                    if !(8..=MAX_STARTUP).contains(&len) || untyped_code(code).is_none() {
                        // Not a start-up packet: the capture began mid-connection.
                        self.client.state = State::Typed;
                        continue;
                    }
                    let len = len as usize;
                    if rest.len() < len {
                        return pos;
                    }
                    let msg = &rest[..len];
                    pos += len;
                    self.untyped(msg, out);
                }
                State::Typed => {
                    if rest.len() < 5 {
                        return pos;
                    }
                    let tag = rest[0];
                    let len = be32(&rest[1..]);
                    if !(4..=MAX_SANE).contains(&len) || !known_tag(side, tag) {
                        tracing::debug!(
                            side = side.as_str(),
                            tag,
                            len,
                            "pgsql: bad header, resyncing"
                        );
                        pos += 1;
                        self.stream(side).state = State::Resync;
                        continue;
                    }
                    let total = len as usize + 1;
                    if rest.len() >= total {
                        pos += total;
                        self.typed(side, ts, &rest[..total], out);
                    } else if total > MAX_MESSAGE {
                        self.oversized(side, tag, len, &rest[..rest.len().min(RAW_PREFIX)], out);
                        self.stream(side).state = State::Skip((total - rest.len()) as u64);
                        return input.len();
                    } else {
                        return pos;
                    }
                }
            }
        }
        pos
    }

    fn untyped(&mut self, msg: &[u8], out: &mut Vec<EventKind>) {
        let Some(f) = frontend::untyped(&msg[4..]) else {
            self.client.state = State::Typed;
            return self.emit(Side::Client, "StartupMessage", malformed(), msg, out);
        };
        match f.effect {
            frontend::Effect::AskEncryption => self.server.state = State::EncryptionAnswer,
            _ => self.client.state = State::Typed,
        }
        self.emit(Side::Client, f.name, f.fields, msg, out);
    }

    fn typed(&mut self, side: Side, ts: Timestamp, msg: &[u8], out: &mut Vec<EventKind>) {
        let tag = msg[0];
        match side {
            Side::Client => {
                let Some(f) = frontend::typed(tag, &msg[5..], self.auth, self.fields) else {
                    return self.emit(side, frontend::tag_name(tag), malformed(), msg, out);
                };
                let mut fields = f.fields;
                use frontend::Effect as E;
                match f.effect {
                    E::None | E::AskEncryption | E::Started => {}
                    E::Query(sql) => self.tracker.query(sql, ts),
                    E::Parse { name, sql } => self.tracker.parse(&name, sql),
                    E::Bind {
                        portal,
                        statement,
                        params,
                    } => {
                        let sql = self.tracker.statement_sql(&statement);
                        add_sql(&mut fields, sql);
                        self.tracker.bind(&portal, &statement, params)
                    }
                    E::Execute(portal) => {
                        add_sql(&mut fields, self.tracker.portal_sql(&portal));
                        self.tracker.execute(&portal, ts)
                    }
                    E::Close(kind, name) => self.tracker.close(kind, &name),
                    E::Sync => self.tracker.sync(),
                }
                self.emit(side, f.name, fields, msg, out);
            }
            Side::Server => {
                let b = backend::decode(msg, &self.formats, self.fields);
                use backend::Effect as E;
                let tx = match b.effect {
                    E::None => None,
                    E::Auth(code) => {
                        self.auth = code;
                        None
                    }
                    E::Columns(formats) => {
                        self.formats = formats;
                        None
                    }
                    E::DataRow => {
                        self.tracker.data_row();
                        None
                    }
                    E::Complete(tag) => self.tracker.complete(tag, ts),
                    E::Error { code, message } => self.tracker.error(&code, &message, ts),
                    E::Ready => {
                        self.tracker.ready();
                        None
                    }
                };
                self.emit(side, b.name, b.fields, msg, out);
                if let Some(tx) = tx {
                    out.push(EventKind::Transaction(Transaction::Postgres(tx)));
                }
            }
        }
    }

    /// A message too long to buffer: reported with its length, the start of it as `raw`.
    fn oversized(&mut self, side: Side, tag: u8, len: u32, head: &[u8], out: &mut Vec<EventKind>) {
        let name = match side {
            Side::Client => frontend::tag_name(tag),
            Side::Server => {
                if tag == b'D' {
                    self.tracker.data_row();
                }
                backend::tag_name(tag)
            }
        };
        let fields = serde_json::json!({ "length": len, "truncated": true });
        self.emit(side, name, fields, head, out);
    }

    fn emit(&self, from: Side, name: &str, fields: Value, raw: &[u8], out: &mut Vec<EventKind>) {
        let (fields, raw) = if self.fields {
            (fields, Bytes::copy_from_slice(raw))
        } else {
            (Value::Null, Bytes::new())
        };
        out.push(EventKind::Message(Message {
            protocol: Protocol::Postgres,
            from,
            type_name: name.to_string(),
            fields,
            raw,
        }));
    }
}

/// `build()`'s fields when they are wanted, else `null` without building them.
pub(crate) fn fields_if(wanted: bool, build: impl FnOnce() -> Value) -> Value {
    if wanted {
        build()
    } else {
        Value::Null
    }
}

/// Adds the SQL a `Bind` or `Execute` runs (the statement it was prepared from) to its
/// fields, when known and the fields are built.
fn add_sql(fields: &mut Value, sql: Option<&str>) {
    if let (Value::Object(map), Some(sql)) = (fields, sql) {
        map.insert("sql".into(), sql.into());
    }
}

fn malformed() -> Value {
    serde_json::json!({ "malformed": true })
}

fn known_tag(side: Side, tag: u8) -> bool {
    match side {
        Side::Client => frontend::known_tag(tag),
        Side::Server => backend::known_tag(tag),
    }
}

/// The next offset in `data` where a plausible typed header starts: a known tag, a sane
/// length, and (when the bytes are there) another known tag right after the message.
fn find_header(side: Side, data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(4)).find(|&i| {
        let len = be32(&data[i + 1..]);
        if !known_tag(side, data[i]) || !(4..=MAX_MESSAGE as u32).contains(&len) {
            return false;
        }
        match data.get(i + 1 + len as usize) {
            Some(&next) => known_tag(side, next),
            None => true,
        }
    })
}

#[cfg(test)]
mod tests;
