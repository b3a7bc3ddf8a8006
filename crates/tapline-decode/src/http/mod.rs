//! HTTP/1.x stream decoder, both directions of one connection.
//!
//! Heads are parsed with httparse; bodies are delimited by Content-Length, chunked coding
//! (trailers appended to the headers) or the end of the connection, with no body for HEAD,
//! 1xx, 204 and 304. Requests wait in a queue (pipelining) for the responses that answer them.
//! A 101 answer or a successful CONNECT makes the rest of the flow opaque (raw chunks only);
//! the client's bytes after such a request are held until the answer says which it is.
//!
//! Bytes are parsed in place; only an incomplete head, chunk-size line or trailer is buffered,
//! and never beyond [`MAX_HEAD`]. Bodies are kept up to the body limit and counted past it.
//! Garbage or a capture gap that breaks framing makes that side resynchronise on the next
//! request line (client) or status line (server).

mod head;

pub use head::Framing;

use bytes::Bytes;
use tapline_core::{EventKind, HttpRequest, HttpResponse, Side, Timestamp};

use crate::detect::starts_request;
use crate::flow_decoder::feed_buffered;
use crate::transaction::HttpPairing;
use head::Parsed;

/// Largest head (or chunk trailer section) buffered; a longer one is garbage to resync past.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line accepted (extensions included).
const MAX_CHUNK_LINE: usize = 4096;
/// Bytes kept while resynchronising, so a start line split across reads is still found.
const RESYNC_TAIL: usize = 16;

/// Where one direction's parser is.
#[derive(Debug)]
enum State {
    /// Expecting a request or status line.
    Head,
    /// Inside a body.
    Body(Body),
    /// Framing was lost: skipping to the next start line.
    Resync,
    /// (Client) sent an Upgrade or CONNECT request: what follows is held until the answer.
    HoldForUpgrade,
    /// Upgraded or tunnelled: not HTTP any more.
    Opaque,
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug)]
enum Head {
    Request(HttpRequest),
    Response(HttpResponse),
}

impl Head {
    fn headers_mut(&mut self) -> &mut tapline_core::Headers {
        match self {
            Head::Request(r) => &mut r.headers,
            Head::Response(r) => &mut r.headers,
        }
    }
}

/// A message whose head was read and whose body is arriving (boxed while it does, so an
/// idle connection keeps no room for one).
#[derive(Debug)]
struct InFlight {
    head: Head,
    body: Vec<u8>,
    body_len: u64,
    truncated: bool,
}

/// What a body step ended on.
enum Step {
    NeedMore,
    Done,
    Invalid,
}

#[derive(Debug)]
struct Direction {
    buf: Vec<u8>,
    state: State,
    msg: Option<Box<InFlight>>,
    last_ts: Timestamp,
}

impl Direction {
    fn new() -> Self {
        Direction {
            buf: Vec::new(),
            state: State::Head,
            msg: None,
            last_ts: Timestamp::default(),
        }
    }

    fn append_body(&mut self, data: &[u8], limit: usize) {
        if let Some(m) = self.msg.as_mut() {
            m.body_len += data.len() as u64;
            let room = limit.saturating_sub(m.body.len());
            if data.len() > room {
                m.truncated = true;
            }
            m.body.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Consumes body bytes from `rest`; returns how many and where it stopped.
    fn body_step(&mut self, rest: &[u8], limit: usize) -> (usize, Step) {
        let mut pos = 0;
        loop {
            let input = &rest[pos..];
            let State::Body(body) = &mut self.state else {
                return (pos, Step::Done);
            };
            match body {
                Body::UntilClose => {
                    self.append_body(input, limit);
                    return (rest.len(), Step::NeedMore);
                }
                Body::Length(remaining) => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    *remaining -= take as u64;
                    let done = *remaining == 0;
                    self.append_body(&input[..take], limit);
                    pos += take;
                    return (pos, if done { Step::Done } else { Step::NeedMore });
                }
                Body::Chunked(chunk) => match *chunk {
                    Chunk::Size => match httparse::parse_chunk_size(input) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            pos += n;
                            *chunk = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if input.len() <= MAX_CHUNK_LINE => {
                            return (pos, Step::NeedMore)
                        }
                        _ => return (pos, Step::Invalid),
                    },
                    Chunk::Data(remaining) => {
                        let take = remaining.min(input.len() as u64) as usize;
                        *chunk = if remaining == take as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(remaining - take as u64)
                        };
                        self.append_body(&input[..take], limit);
                        pos += take;
                        if take == input.len() {
                            return (pos, Step::NeedMore);
                        }
                    }
                    Chunk::DataEnd => {
                        if input.starts_with(b"\r\n") {
                            pos += 2;
                        } else if input.starts_with(b"\n") {
                            pos += 1;
                        } else if input == b"\r" || input.is_empty() {
                            return (pos, Step::NeedMore);
                        } else {
                            return (pos, Step::Invalid);
                        }
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let Some(nl) = memchr::memchr(b'\n', input) else {
                            return if input.len() <= MAX_HEAD {
                                (pos, Step::NeedMore)
                            } else {
                                (pos, Step::Invalid)
                            };
                        };
                        pos += nl + 1;
                        let line = input[..nl].strip_suffix(b"\r").unwrap_or(&input[..nl]);
                        if line.is_empty() {
                            return (pos, Step::Done);
                        }
                        let line = String::from_utf8_lossy(line);
                        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                        if let Some(m) = self.msg.as_mut() {
                            m.head.headers_mut().add(name.trim(), value.trim());
                        }
                    }
                },
            }
        }
    }
}

/// Decodes HTTP/1.x in both directions of one connection into `http_request`,
/// `http_response` and `transaction` events.
#[derive(Debug)]
pub struct HttpDecoder {
    client: Direction,
    server: Direction,
    pairing: HttpPairing,
    body_limit: usize,
}

impl HttpDecoder {
    /// A decoder keeping bodies up to `body_limit` bytes.
    pub fn new(body_limit: usize) -> Self {
        Self::with_transaction_heads(body_limit, true)
    }

    /// A decoder whose `transaction` events carry copies of the request and response heads
    /// only when `heads` (else just the request line and the status: see
    /// `DecodeConfig::transaction_heads`). The `http_request`/`http_response` events are
    /// the same either way.
    pub fn with_transaction_heads(body_limit: usize, heads: bool) -> Self {
        HttpDecoder {
            client: Direction::new(),
            server: Direction::new(),
            pairing: HttpPairing::new(heads),
            body_limit,
        }
    }

    /// True once the connection was upgraded or tunnelled (no more HTTP to decode).
    pub fn is_opaque(&self) -> bool {
        matches!(self.server.state, State::Opaque)
    }

    /// Feeds in-order bytes from `side` received at `ts`.
    pub fn feed(&mut self, side: Side, ts: Timestamp, data: &[u8], out: &mut Vec<EventKind>) {
        self.feed_side(side, ts, data, out);
    }

    fn feed_side(&mut self, side: Side, ts: Timestamp, data: &[u8], out: &mut Vec<EventKind>) {
        self.dir(side).last_ts = ts;
        let buf = std::mem::take(&mut self.dir(side).buf);
        let mut buf = feed_buffered(buf, data, |input| self.run(side, ts, input, out));
        let dir = self.dir(side);
        if buf.len() > MAX_HEAD && matches!(dir.state, State::HoldForUpgrade) {
            // No answer to the upgrade came while a head's worth of bytes piled up: parse them.
            dir.state = State::Head;
            dir.buf = buf;
            return self.feed_side(side, ts, &[], out);
        }
        if matches!(dir.state, State::Opaque) {
            buf = Vec::new();
        }
        dir.buf = buf;
    }

    /// `len` bytes from `side` were lost (capture gap).
    pub fn gap(&mut self, side: Side, len: u64, out: &mut Vec<EventKind>) {
        let dir = self.dir(side);
        let ts = dir.last_ts;
        let skipped_inside_body = match &mut dir.state {
            State::Opaque | State::HoldForUpgrade => return,
            State::Body(Body::Length(remaining)) if len <= *remaining => {
                *remaining -= len;
                Some(*remaining == 0)
            }
            State::Body(Body::Chunked(Chunk::Data(remaining))) if len <= *remaining => {
                *remaining -= len;
                if *remaining == 0 {
                    dir.state = State::Body(Body::Chunked(Chunk::DataEnd));
                }
                Some(false)
            }
            State::Body(Body::UntilClose) => Some(false),
            _ => None,
        };
        match skipped_inside_body {
            Some(done) => {
                if let Some(m) = dir.msg.as_mut() {
                    m.truncated = true;
                    m.body_len += len;
                }
                if done {
                    self.complete(side, ts, out);
                }
            }
            None => {
                tracing::debug!(
                    side = side.as_str(),
                    len,
                    "http: gap breaks framing, resyncing"
                );
                dir.buf.clear();
                if dir.msg.is_some() {
                    if let Some(m) = dir.msg.as_mut() {
                        m.truncated = true;
                    }
                    self.complete(side, ts, out);
                }
                self.dir(side).state = State::Resync;
            }
        }
    }

    /// The connection ended: a close-delimited body is complete; other unfinished bodies are
    /// reported truncated.
    pub fn finish(&mut self, ts: Timestamp, out: &mut Vec<EventKind>) {
        for side in [Side::Client, Side::Server] {
            let dir = self.dir(side);
            if dir.msg.is_some() {
                let until_close = matches!(dir.state, State::Body(Body::UntilClose));
                if let Some(m) = dir.msg.as_mut() {
                    m.truncated |= !until_close;
                }
                self.complete(side, ts, out);
            }
            let dir = self.dir(side);
            dir.state = State::Opaque;
            dir.buf = Vec::new();
        }
    }

    fn dir(&mut self, side: Side) -> &mut Direction {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// Parses as much of `input` as possible; returns the bytes consumed.
    fn run(&mut self, side: Side, ts: Timestamp, input: &[u8], out: &mut Vec<EventKind>) -> usize {
        let limit = self.body_limit;
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let dir = self.dir(side);
            match dir.state {
                State::Opaque => return input.len(),
                State::HoldForUpgrade => return pos,
                State::Resync => match find_start(side, rest) {
                    Some(at) => {
                        pos += at;
                        dir.state = State::Head;
                    }
                    None => return input.len() - rest.len().min(RESYNC_TAIL),
                },
                State::Head => {
                    let parsed = match side {
                        Side::Client => head::parse_request(rest).map(Head::Request),
                        Side::Server => head::parse_response(rest).map(Head::Response),
                    };
                    match parsed {
                        Parsed::Complete(head, n) => {
                            pos += n;
                            match head {
                                Head::Request(req) => self.request_head(req, ts, out),
                                Head::Response(resp) => self.response_head(resp, ts, out),
                            }
                        }
                        Parsed::Partial if rest.len() <= MAX_HEAD => return pos,
                        _ => {
                            tracing::debug!(side = side.as_str(), "http: not a head, resyncing");
                            pos += 1;
                            dir.state = State::Resync;
                        }
                    }
                }
                State::Body(_) => {
                    let (n, step) = dir.body_step(rest, limit);
                    pos += n;
                    match step {
                        Step::NeedMore => return pos,
                        Step::Done => self.complete(side, ts, out),
                        Step::Invalid => {
                            tracing::debug!(side = side.as_str(), "http: bad chunking, resyncing");
                            if let Some(m) = dir.msg.as_mut() {
                                m.truncated = true;
                            }
                            self.complete(side, ts, out);
                            self.dir(side).state = State::Resync;
                        }
                    }
                }
            }
        }
        pos
    }

    fn request_head(&mut self, req: HttpRequest, ts: Timestamp, out: &mut Vec<EventKind>) {
        let framing = head::request_framing(&req).unwrap_or(Framing::Empty);
        self.pairing.push(&req, ts);
        self.start_body(Side::Client, Head::Request(req), framing, ts, out);
    }

    fn response_head(&mut self, mut resp: HttpResponse, ts: Timestamp, out: &mut Vec<EventKind>) {
        let request = self.pairing.front();
        let method = request.map(|p| method_kind(&p.request.method));
        if let Some(p) = request {
            resp.request = Some(p.request.line());
            resp.latency = Some(ts.since(p.end_ts.unwrap_or(p.head_ts)));
        }
        let connect_ok = method == Some(MethodKind::Connect) && (200..300).contains(&resp.status);
        if resp.status == 101 || connect_ok {
            out.push(EventKind::HttpResponse(resp.clone()));
            out.extend(self.pairing.answer(&resp).map(EventKind::Transaction));
            for side in [Side::Client, Side::Server] {
                let dir = self.dir(side);
                dir.state = State::Opaque;
                dir.buf = Vec::new();
            }
            return;
        }
        if (100..200).contains(&resp.status) {
            // Interim (100 Continue, 103 Early Hints): the request still waits for its answer.
            out.push(EventKind::HttpResponse(resp));
            return;
        }
        let framing = head::response_framing(&resp, method == Some(MethodKind::Head));
        self.start_body(Side::Server, Head::Response(resp), framing, ts, out);
    }

    fn start_body(
        &mut self,
        side: Side,
        head: Head,
        framing: Framing,
        ts: Timestamp,
        out: &mut Vec<EventKind>,
    ) {
        let msg = InFlight {
            head,
            body: Vec::new(),
            body_len: 0,
            truncated: false,
        };
        let state = match framing {
            // No body (most requests): out at once, never boxed.
            Framing::Empty => {
                self.dir(side).msg = None;
                return self.emit_message(side, ts, msg, out);
            }
            Framing::Length(n) => State::Body(Body::Length(n)),
            Framing::Chunked => State::Body(Body::Chunked(Chunk::Size)),
            Framing::UntilClose => State::Body(Body::UntilClose),
        };
        let dir = self.dir(side);
        dir.msg = Some(Box::new(msg));
        dir.state = state;
    }

    /// The message on `side` is complete at `ts`: emit it (and its transaction).
    fn complete(&mut self, side: Side, ts: Timestamp, out: &mut Vec<EventKind>) {
        let dir = self.dir(side);
        dir.state = State::Head;
        if let Some(m) = dir.msg.take() {
            self.emit_message(side, ts, *m, out);
        }
    }

    /// Emits the complete message `m` from `side` (and its transaction); the side expects a
    /// new head next (or holds bytes for an upgrade).
    fn emit_message(&mut self, side: Side, ts: Timestamp, m: InFlight, out: &mut Vec<EventKind>) {
        let dir = self.dir(side);
        dir.state = State::Head;
        let body = Bytes::from(m.body);
        match m.head {
            Head::Request(mut req) => {
                let hold = req.method.eq_ignore_ascii_case("CONNECT")
                    || req.headers.get("upgrade").is_some();
                if hold {
                    dir.state = State::HoldForUpgrade;
                }
                req.body = body;
                req.body_len = m.body_len;
                req.body_truncated = m.truncated;
                self.pairing.request_done(ts, m.body_len, m.truncated);
                out.push(EventKind::HttpRequest(req));
            }
            Head::Response(mut resp) => {
                resp.body = body;
                resp.body_len = m.body_len;
                resp.body_truncated = m.truncated;
                let tx = self.pairing.answer(&resp);
                out.push(EventKind::HttpResponse(resp));
                out.extend(tx.map(EventKind::Transaction));
                if matches!(self.client.state, State::HoldForUpgrade) {
                    // The upgrade was refused: what the client sent meanwhile is HTTP again.
                    // (The server's own bytes are out of `self` while it runs.)
                    self.client.state = State::Head;
                    self.feed_side(Side::Client, ts, &[], out);
                }
            }
        }
    }
}

/// What a request's method means for the answer's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MethodKind {
    Head,
    Connect,
    Other,
}

fn method_kind(method: &str) -> MethodKind {
    if method.eq_ignore_ascii_case("HEAD") {
        MethodKind::Head
    } else if method == "CONNECT" {
        MethodKind::Connect
    } else {
        MethodKind::Other
    }
}

impl<T> Parsed<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Complete(t, n) => Parsed::Complete(f(t), n),
            Parsed::Partial => Parsed::Partial,
            Parsed::Invalid => Parsed::Invalid,
        }
    }
}

/// Where the next start line begins: a request line at a line start (client), or `HTTP/1.`
/// (server).
fn find_start(side: Side, data: &[u8]) -> Option<usize> {
    match side {
        Side::Server => memchr::memmem::find(data, b"HTTP/1."),
        Side::Client => std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', data).map(|i| i + 1))
            .find(|&i| starts_request(&data[i..])),
    }
}

#[cfg(test)]
mod tests;
