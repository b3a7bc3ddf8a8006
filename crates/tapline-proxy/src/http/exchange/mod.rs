//! The HTTP/1 exchanges of one client connection as a state machine that does no I/O and
//! reads no clock: bytes go in through its two input buffers, bytes come out through its two
//! output queues, and [`Exchange::step`] says what it needs next — more bytes, a route, the
//! request hooks, an upstream connection, the response hooks — or how the connection ends.
//! The driver (`super::driver`) does the reading, writing, waiting, routing and hook calls;
//! tests script all of that (`tests`).
//!
//! One exchange goes: expect request head → (read the request body for the hooks → request
//! hooks) → connect → send, the rest of the body streaming while the response head is awaited
//! (interim responses passed on) → (read the response body for the hooks → response hooks) →
//! relay the response body → done; or switched (a `101`: raw bytes from then on). The
//! connection then expects the next request head, or closes. Framing, heads and bodies are
//! the shared codec's (`tapline_decode::http1`), read strictly: what a peer could read two
//! ways is refused (400 to the client, 502 for the upstream).

mod apply;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tapline_core::{FlowEnd, HttpRequest, HttpResponse, Timestamp};
use tapline_decode::http1::write::write_response;
use tapline_decode::http1::{BodyReader, RequestHead, ResponseHead};

use super::target::Target;
use crate::errors::{short_response, UpstreamError};

/// The bounds one exchange keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Largest request or response head.
    pub(crate) max_head: usize,
    /// Largest body read for the hooks.
    pub(crate) body_limit: usize,
}

/// What the driver found out about a request head.
#[derive(Debug)]
pub(crate) struct Routed {
    /// Where it goes.
    pub(crate) target: Target,
    /// The address it goes to (unspecified when unreachable).
    pub(crate) addr: SocketAddr,
    /// Stages read requests: the body is read (up to the limit) for the request hooks.
    pub(crate) hook_requests: bool,
    /// Stages read responses: likewise for the response hooks.
    pub(crate) hook_responses: bool,
    /// Someone reads the exchange's details: the request and response are built for them.
    pub(crate) details: bool,
    /// An output shows bodies: those that stream by (not read for hooks) are copied, up to
    /// the body limit, into the exchange's events.
    pub(crate) copy_bodies: bool,
    /// Why the upstream cannot be reached; the request hooks still run (a plugin may answer
    /// for a host that does not resolve), then the client gets the 502/504.
    pub(crate) unreachable: Option<UpstreamError>,
}

/// What the machine needs to go on, or how the connection ends. Before acting on a step
/// the driver writes out what is queued for the client and the upstream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// More bytes (or the end of the stream) from these sides.
    Read(Wait),
    /// A request head is in: where does it go? Answer with [`Exchange::routed`].
    Route,
    /// Run the request hooks on [`Exchange::request_mut`]; answer with
    /// [`Exchange::request_verdict`].
    RequestHooks,
    /// An upstream connection to the routed address (a new one when `fresh`); answer with
    /// [`Exchange::connected`] or [`Exchange::connect_failed`].
    Connect {
        /// Not from the pool: a reused one was closed under the request.
        fresh: bool,
    },
    /// Run the response hooks on [`Exchange::response_mut`]; answer with
    /// [`Exchange::response_verdict`].
    ResponseHooks,
    /// The exchange is over: report it ([`Exchange::take_report`]) and keep the upstream
    /// connection for the next request when [`Exchange::upstream_reusable`].
    Done,
    /// `CONNECT` to this `host:port`: the connection becomes a tunnel (what the client sent
    /// after its head is in [`Exchange::client_in`]).
    Tunnel(String),
    /// The upstream switched protocols: raw bytes both ways from now on (what either side
    /// sent after its head is in the input buffers).
    Switch,
    /// The connection is over.
    Close(FlowEnd),
}

/// Which sides the machine reads, and which timeout applies to the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    /// The client, with this timeout; `None` when its bytes are not wanted now.
    pub(crate) client: Option<Timer>,
    /// The upstream (always with the idle timeout between two reads).
    pub(crate) upstream: bool,
}

/// The timeout of a wait for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Between requests: the idle timeout, and the run draining, close the connection.
    Idle,
    /// A head has begun: it must be whole within the idle timeout of its first byte.
    Head,
    /// Inside a body: the idle timeout between two reads.
    Stall,
}

/// An exchange to report: the request, the response, when each was seen.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) request: HttpRequest,
    pub(crate) response: HttpResponse,
    pub(crate) request_ts: Timestamp,
    pub(crate) response_ts: Timestamp,
}

/// Something that happened on a side that the machine has not taken in yet.
#[derive(Debug, Default)]
struct Sighting {
    eof: bool,
    failed: Option<String>,
    timed_out: Option<Duration>,
}

/// What a side's sightings mean for a body it is sending.
enum BodyNews {
    /// Nothing yet: wait for more.
    Wait,
    /// The side closed where the body may end (an until-close body).
    Ended,
    /// The body cannot go on: the side failed, went quiet, or closed mid-body.
    Broken(String),
}

impl Sighting {
    /// What happened to a side that is sending `body` (told of the side's end).
    fn body_news(&mut self, body: &mut BodyReader) -> BodyNews {
        if let Some(why) = self.failed.take() {
            BodyNews::Broken(why)
        } else if let Some(after) = self.timed_out.take() {
            BodyNews::Broken(format!("no data for {after:?}"))
        } else if self.eof {
            match body.eof() {
                Ok(()) => BodyNews::Ended,
                Err(e) => BodyNews::Broken(e.to_string()),
            }
        } else {
            BodyNews::Wait
        }
    }
}

/// One client connection's exchanges, one after another.
pub(crate) struct Exchange {
    bounds: Bounds,
    /// An `http` mapping (CONNECT is the forward proxy's).
    fixed: bool,
    /// Read from the client and not used yet.
    pub(crate) client_in: BytesMut,
    /// Read from the upstream and not used yet (the buffer travels with the connection).
    pub(crate) upstream_in: BytesMut,
    to_client: VecDeque<Bytes>,
    to_upstream: VecDeque<Bytes>,
    client: Sighting,
    upstream: Sighting,
    /// The run is draining: no connection is kept after its exchange.
    draining: bool,
    /// Why a hook closed the connection.
    closed_by: Option<String>,
    state: State,
    ex: Option<Box<request::Ex>>,
    /// The last exchange's room, for the next (an exchange is large: one allocation per
    /// connection rather than per request).
    spare: Option<Box<request::Ex>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectRequestHead,
    Routing,
    BufferRequestBody,
    RequestHooks,
    Connecting {
        fresh: bool,
    },
    ExpectResponseHead,
    BufferResponseBody,
    ResponseHooks,
    ResponseBody,
    /// The exchange is over and to be reported.
    Done,
    /// Reported: on to the next request, or the end.
    Reported,
    Switched,
}

/// What a state handler did: go on stepping, or hand the driver a step.
enum Flow {
    Next,
    Out(Step),
}

impl Exchange {
    /// A connection's machine; `fixed` for an `http` mapping.
    pub(crate) fn new(bounds: Bounds, fixed: bool) -> Exchange {
        Exchange {
            bounds,
            fixed,
            client_in: BytesMut::new(),
            upstream_in: BytesMut::new(),
            to_client: VecDeque::new(),
            to_upstream: VecDeque::new(),
            client: Sighting::default(),
            upstream: Sighting::default(),
            draining: false,
            closed_by: None,
            state: State::ExpectRequestHead,
            ex: None,
            spare: None,
        }
    }

    /// Advances as far as the bytes in and the answers given allow; `now` timestamps what
    /// completes.
    pub(crate) fn step(&mut self, now: Timestamp) -> Step {
        loop {
            let flow = match self.state {
                State::ExpectRequestHead => self.expect_request_head(now),
                State::Routing => Flow::Out(Step::Route),
                State::BufferRequestBody => self.buffer_request_body(),
                State::RequestHooks => Flow::Out(Step::RequestHooks),
                State::Connecting { fresh } => Flow::Out(Step::Connect { fresh }),
                State::ExpectResponseHead => self.expect_response_head(now),
                State::BufferResponseBody => self.buffer_response_body(now),
                State::ResponseHooks => Flow::Out(Step::ResponseHooks),
                State::ResponseBody => self.relay_response_body(),
                State::Done => {
                    self.state = State::Reported;
                    Flow::Out(Step::Done)
                }
                State::Reported => self.next_exchange(),
                State::Switched => Flow::Out(Step::Switch),
            };
            if let Flow::Out(step) = flow {
                if let Step::Close(_) | Step::Tunnel(_) = step {
                    self.ex = None;
                }
                return step;
            }
        }
    }

    /// The client's stream ended.
    pub(crate) fn client_eof(&mut self) {
        self.client.eof = true;
    }

    /// Reading from or writing to the client failed.
    pub(crate) fn client_failed(&mut self, why: String) {
        self.client.failed = Some(why);
    }

    /// The upstream's stream ended.
    pub(crate) fn upstream_eof(&mut self) {
        self.upstream.eof = true;
    }

    /// Reading from or writing to the upstream failed.
    pub(crate) fn upstream_failed(&mut self, why: String) {
        self.upstream.failed = Some(why);
    }

    /// A side sent nothing for `after`.
    pub(crate) fn timed_out(&mut self, client: bool, after: Duration) {
        let side = if client {
            &mut self.client
        } else {
            &mut self.upstream
        };
        side.timed_out = Some(after);
    }

    /// Whether the run is draining (no connection is kept after its exchange).
    pub(crate) fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// The next bytes to write to the client, if any.
    pub(crate) fn client_output(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.to_client
    }

    /// The next bytes to write to the upstream, if any.
    pub(crate) fn upstream_output(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.to_upstream
    }

    /// The request head being served (after [`Step::Route`]).
    pub(crate) fn request_head(&self) -> Option<&RequestHead> {
        self.ex.as_deref().map(|ex| &ex.head)
    }

    /// The request as the hooks see and edit it (after [`Step::RequestHooks`]).
    pub(crate) fn request_mut(&mut self) -> Option<&mut HttpRequest> {
        self.ex.as_deref_mut().map(|ex| &mut ex.request)
    }

    /// The response as the hooks see and edit it (after [`Step::ResponseHooks`]).
    pub(crate) fn response_mut(&mut self) -> Option<&mut HttpResponse> {
        self.ex.as_deref_mut().map(|ex| &mut ex.response)
    }

    /// The finished exchange to report (once, after [`Step::Done`] or [`Step::Switch`]).
    pub(crate) fn take_report(&mut self) -> Option<Report> {
        self.ex.as_deref_mut().and_then(|ex| ex.report.take())
    }

    /// Whether the upstream connection may serve another request (after [`Step::Done`]).
    pub(crate) fn upstream_reusable(&self) -> bool {
        self.ex.as_deref().is_some_and(|ex| ex.reusable)
    }

    /// What to report of an exchange whose response body was still on its way when the run
    /// was forced to stop, with the bytes of it that went by.
    pub(crate) fn interrupted(&mut self) -> Option<Report> {
        if self.state != State::ResponseBody {
            return None;
        }
        let ex = self.ex.as_deref_mut()?;
        ex.response.body_len = ex.response.body_len.max(ex.resp_body.payload());
        ex.finish_report(ex.response_ts);
        ex.report.take()
    }

    /// Answers a request the proxy cannot serve, and closes.
    fn refuse(&mut self, status: u16, why: &str) -> Flow {
        let mut out = Vec::new();
        write_response(
            &mut out,
            &short_response(status, &format!("tapline: {why}")),
            true,
        );
        self.to_client.push_back(out.into());
        Flow::Out(Step::Close(FlowEnd::Fin))
    }

    /// The exchange is reported and released: the next one, or the end.
    fn next_exchange(&mut self) -> Flow {
        let ex = self.ex.take();
        let keep = ex.as_ref().is_some_and(|ex| ex.keep_client);
        self.spare = ex;
        self.upstream = Sighting::default();
        if let Some(reason) = self.closed_by.take() {
            return Flow::Out(Step::Close(FlowEnd::ClosedByPlugin(reason)));
        }
        if keep && !self.draining {
            self.state = State::ExpectRequestHead;
            Flow::Next
        } else {
            Flow::Out(Step::Close(FlowEnd::Fin))
        }
    }
}

/// `Ns` or `Nms`, for messages.
fn humane(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A response head read from the upstream, with what the exchange needs of it.
type UpstreamHead = ResponseHead<Bytes>;

/// Copies of the bodies that streamed through (for outputs that show bodies), at most
/// `limit` bytes each; `limit` 0 copies nothing.
#[derive(Debug, Default)]
pub(super) struct BodyCopies {
    pub(super) limit: usize,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl BodyCopies {
    pub(super) fn keep_request(&mut self, payload: &[u8]) {
        keep(&mut self.request, payload, self.limit);
    }

    pub(super) fn keep_response(&mut self, payload: &[u8]) {
        keep(&mut self.response, payload, self.limit);
    }

    /// Gives the copies to the messages whose bodies were not read for the hooks.
    pub(super) fn fill(&mut self, request: &mut HttpRequest, response: &mut HttpResponse) {
        let (req, resp) = (
            std::mem::take(&mut self.request),
            std::mem::take(&mut self.response),
        );
        if request.body.is_empty() && !req.is_empty() {
            request.body_truncated = (req.len() as u64) < request.body_len;
            request.body = req.into();
        }
        if response.body.is_empty() && !resp.is_empty() {
            response.body_truncated = (resp.len() as u64) < response.body_len;
            response.body = resp.into();
        }
    }
}

fn keep(copy: &mut Vec<u8>, payload: &[u8], limit: usize) {
    let room = limit.saturating_sub(copy.len()).min(payload.len());
    copy.extend_from_slice(&payload[..room]);
}

/// A body read into memory for the hooks.
#[derive(Debug, Default)]
struct Buffered {
    /// The bytes as framed on the wire (what goes on when nobody changed the body).
    framed: Vec<u8>,
    /// The payload read (chunked bodies decoded); may pass the limit by one read.
    payload: Vec<u8>,
    /// True when the whole body was read.
    complete: bool,
}

impl Buffered {
    /// Empty again, keeping its memory.
    fn clear(&mut self) {
        self.framed.clear();
        self.payload.clear();
        self.complete = false;
    }

    /// Takes what `body` has of `input` into memory; the bytes taken are consumed.
    fn take(
        &mut self,
        body: &mut BodyReader,
        input: &mut BytesMut,
    ) -> Result<(), tapline_decode::http1::FramingError> {
        let payload = &mut self.payload;
        let n = body.take(input, |p| payload.extend_from_slice(p))?;
        self.framed.extend_from_slice(&input[..n]);
        input.advance(n);
        self.complete = body.is_done();
        Ok(())
    }

    /// What the hooks see: at most `limit` bytes, and whether that is all of the body.
    fn seen(&self, limit: usize) -> (Bytes, bool) {
        let n = self.payload.len().min(limit);
        (
            Bytes::copy_from_slice(&self.payload[..n]),
            !self.complete || self.payload.len() > limit,
        )
    }
}
