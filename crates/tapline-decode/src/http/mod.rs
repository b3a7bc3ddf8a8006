//! HTTP/1.x stream decoder, both directions of one connection, on the shared HTTP/1 codec
//! ([`crate::http1`]) read leniently.
//!
//! Heads are parsed in place; bodies are delimited as a server would read them (trailers
//! appended to the headers), with no body for HEAD, 1xx, 204 and 304. Requests wait in a
//! queue (pipelining) for the responses that answer them. A 101 answer or a successful
//! CONNECT makes the rest of the flow opaque (raw chunks only); the client's bytes after such
//! a request are held until the answer says which it is.
//!
//! Only an incomplete head, chunk-size line or trailer is buffered, and never beyond
//! [`MAX_HEAD`]. Bodies are kept up to the body limit and counted past it. Garbage or a
//! capture gap that breaks framing makes that side resynchronise on the next request line
//! (client) or status line (server).

use bytes::Bytes;
use tapline_core::{EventKind, Headers, HttpRequest, HttpResponse, Side, Timestamp};

use crate::detect::starts_request;
use crate::flow_decoder::feed_buffered;
use crate::http1::{BodyReader, Framing, RequestHead, ResponseHead, Strictness};
use crate::transaction::HttpPairing;

/// Largest head (or chunk trailer section) buffered; a longer one is garbage to resync past.
pub const MAX_HEAD: usize = 64 * 1024;
/// Bytes kept while resynchronising, so a start line split across reads is still found.
const RESYNC_TAIL: usize = 16;

/// Where one direction's parser is.
#[derive(Debug)]
enum State {
    /// Expecting a request or status line.
    Head,
    /// Inside a body.
    Body(BodyReader),
    /// Framing was lost: skipping to the next start line.
    Resync,
    /// (Client) sent an Upgrade or CONNECT request: what follows is held until the answer.
    HoldForUpgrade,
    /// Upgraded or tunnelled: not HTTP any more.
    Opaque,
}

#[derive(Debug)]
enum Head {
    Request(HttpRequest),
    Response(HttpResponse),
}

impl Head {
    fn headers_mut(&mut self) -> &mut Headers {
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

    /// Consumes body bytes from `rest`, keeping the payload up to `limit`; returns how many
    /// and where it stopped.
    fn body_step(&mut self, rest: &[u8], limit: usize) -> (usize, Step) {
        let State::Body(reader) = &mut self.state else {
            return (0, Step::Done);
        };
        let mut msg = self.msg.as_deref_mut();
        let mut keep = |payload: &[u8]| {
            if let Some(m) = msg.as_deref_mut() {
                let room = limit.saturating_sub(m.body.len());
                m.truncated |= payload.len() > room;
                m.body
                    .extend_from_slice(&payload[..payload.len().min(room)]);
            }
        };
        match reader.take(rest, &mut keep) {
            Ok(n) if reader.is_done() => (n, Step::Done),
            Ok(n) => (n, Step::NeedMore),
            Err(_) => (rest.len(), Step::Invalid),
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
        let skipped = match &mut dir.state {
            State::Opaque | State::HoldForUpgrade => return,
            State::Body(reader) => reader.skip(len).then(|| reader.is_done()),
            _ => None,
        };
        match skipped {
            Some(done) => {
                if let Some(m) = dir.msg.as_mut() {
                    m.truncated = true;
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
                let until_close = matches!(&dir.state, State::Body(r) if r.is_until_close());
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
            let answers_head = side == Side::Server && self.answers_head();
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
                State::Head => match parse_head(side, rest, answers_head) {
                    Ok(Some((head, framing, n))) => {
                        pos += n;
                        match head {
                            Head::Request(req) => self.request_head(req, framing, ts, out),
                            Head::Response(resp) => self.response_head(resp, framing, ts, out),
                        }
                    }
                    Ok(None) if rest.len() <= MAX_HEAD => return pos,
                    _ => {
                        tracing::debug!(side = side.as_str(), "http: not a head, resyncing");
                        pos += 1;
                        dir.state = State::Resync;
                    }
                },
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

    /// True when the next response answers a `HEAD` (and so has no body).
    fn answers_head(&self) -> bool {
        self.pairing
            .front()
            .is_some_and(|p| method_kind(&p.request.method) == MethodKind::Head)
    }

    fn request_head(
        &mut self,
        req: HttpRequest,
        framing: Framing,
        ts: Timestamp,
        out: &mut Vec<EventKind>,
    ) {
        self.pairing.push(&req, ts);
        self.start_body(Side::Client, Head::Request(req), framing, ts, out);
    }

    fn response_head(
        &mut self,
        mut resp: HttpResponse,
        framing: Framing,
        ts: Timestamp,
        out: &mut Vec<EventKind>,
    ) {
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
            truncated: false,
        };
        if framing == Framing::Empty {
            // No body (most requests): out at once, never boxed.
            self.dir(side).msg = None;
            return self.emit_message(side, ts, msg, 0, out);
        }
        let dir = self.dir(side);
        dir.msg = Some(Box::new(msg));
        dir.state = State::Body(BodyReader::keeping_trailers(framing));
    }

    /// The message on `side` is complete at `ts`: emit it (and its transaction).
    fn complete(&mut self, side: Side, ts: Timestamp, out: &mut Vec<EventKind>) {
        let dir = self.dir(side);
        let (body_len, trailers) = match std::mem::replace(&mut dir.state, State::Head) {
            State::Body(reader) => (reader.payload(), reader.trailers()),
            _ => (0, Vec::new()),
        };
        if let Some(mut m) = dir.msg.take() {
            for (name, value) in trailers {
                m.head.headers_mut().add(name, value);
            }
            self.emit_message(side, ts, *m, body_len, out);
        }
    }

    /// Emits the complete message `m` from `side` (and its transaction); the side expects a
    /// new head next (or holds bytes for an upgrade).
    fn emit_message(
        &mut self,
        side: Side,
        ts: Timestamp,
        m: InFlight,
        body_len: u64,
        out: &mut Vec<EventKind>,
    ) {
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
                self.pairing.request_done(ts, &body, body_len, m.truncated);
                req.body = body;
                req.body_len = body_len;
                req.body_truncated = m.truncated;
                out.push(EventKind::HttpRequest(req));
            }
            Head::Response(mut resp) => {
                resp.body = body;
                resp.body_len = body_len;
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

/// A head at the start of `data` from `side`, with its size and how its body is framed
/// (`answers_head`: a response answers a `HEAD`). `Ok(None)` while incomplete; an error for
/// garbage.
fn parse_head(
    side: Side,
    data: &[u8],
    answers_head: bool,
) -> Result<Option<(Head, Framing, usize)>, ()> {
    match side {
        Side::Client => match RequestHead::parse(data, Strictness::Lenient) {
            Ok(Some(head)) => {
                let mut req = head.to_request(head.target(), None);
                req.url = request_url(&req.method, &req.path, &req.headers);
                // A request whose framing cannot be read is taken as bodiless: what follows
                // is garbage to resync past, as a server would refuse it.
                let framing = head.framing(Strictness::Lenient).unwrap_or(Framing::Empty);
                Ok(Some((Head::Request(req), framing, head.size())))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        },
        Side::Server => match ResponseHead::parse(data, Strictness::Lenient) {
            Ok(Some(head)) => {
                let framing = head
                    .framing(answers_head, Strictness::Lenient)
                    .unwrap_or(Framing::UntilClose);
                Ok(Some((
                    Head::Response(head.to_response()),
                    framing,
                    head.size(),
                )))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        },
    }
}

/// The absolute URL of a request: its target when in absolute form, else `http://Host/path`.
fn request_url(method: &str, path: &str, headers: &Headers) -> Option<String> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return None;
    }
    if path.starts_with("http://") || path.starts_with("https://") {
        return Some(path.to_string());
    }
    let host = headers.get("host")?;
    if !path.starts_with('/') || host.is_empty() {
        return None;
    }
    let mut url = String::with_capacity("http://".len() + host.len() + path.len());
    url.push_str("http://");
    url.push_str(host);
    url.push_str(path);
    Some(url)
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
