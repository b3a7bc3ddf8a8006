//! The request half of an exchange: its head, its route, its body read for the hooks, what
//! the hooks decided, and sending it upstream (the rest of the body streams on while the
//! response is awaited, in `response`).

use bytes::{Buf, Bytes, BytesMut};
use tapline_core::{FlowEnd, HttpRequest, HttpResponse, RequestVerdict, Timestamp};
use tapline_decode::http1::write::write_response;
use tapline_decode::http1::{
    BodyReader, Framing, HeadError, RequestHead, ResponseHead, Strictness,
};

use super::apply;
use super::{
    BodyCopies, BodyNews, Buffered, Exchange, Flow, Report, Routed, State, Step, Timer, Wait,
};
use crate::errors::UpstreamError;

/// One request on its way, and later its response.
#[derive(Debug)]
pub(super) struct Ex {
    pub(super) head: RequestHead,
    pub(super) routed: Option<Routed>,
    pub(super) started: Timestamp,
    /// When the request went upstream.
    pub(super) sent: Option<Timestamp>,
    /// The client keeps the connection after this exchange (so far).
    pub(super) keep_client: bool,
    /// The request as hooks and outputs see it (empty when nobody reads it).
    pub(super) request: HttpRequest,
    /// The request body still to come from the client.
    pub(super) req_body: BodyReader,
    /// The body read for the hooks.
    pub(super) buffered: Buffered,
    /// The body as the hooks were given it (to see whether they changed it).
    pub(super) seen_body: Bytes,
    /// Copies of streamed bodies, for outputs that show them.
    pub(super) copies: BodyCopies,
    /// The proxy itself told the client to send the body.
    pub(super) answered_continue: bool,
    /// The first write upstream, kept to send again on a fresh connection when a reused one
    /// closes before answering (only when it holds the whole request).
    pub(super) resend: Option<Bytes>,
    /// The connection in use came from the pool.
    pub(super) reused: bool,
    /// The response has begun (an interim one counts).
    pub(super) answered: bool,
    /// The response as hooks and outputs see it.
    pub(super) response: HttpResponse,
    pub(super) response_ts: Timestamp,
    pub(super) resp_body: BodyReader,
    /// The response head's framing.
    pub(super) resp_framing: Framing,
    /// The final response head, while the hooks have the response.
    pub(super) resp_head: Option<ResponseHead>,
    /// A chunked body for an HTTP/1.0 client: only its payload goes on, until close.
    pub(super) decode: bool,
    /// The response body ends with the connection (so the client connection closes too).
    pub(super) until_close: bool,
    /// The upstream connection may serve another request once this response is read.
    pub(super) upstream_keeps: bool,
    /// The upstream connection may serve another request now (once [`Step::Done`]).
    pub(super) reusable: bool,
    pub(super) report: Option<Report>,
}

impl Ex {
    fn new(head: RequestHead, framing: Framing, started: Timestamp) -> Ex {
        Ex {
            keep_client: head.keep_alive(),
            head,
            routed: None,
            started,
            sent: None,
            request: HttpRequest::default(),
            req_body: BodyReader::new(framing),
            buffered: Buffered::default(),
            seen_body: Bytes::new(),
            copies: BodyCopies::default(),
            answered_continue: false,
            resend: None,
            reused: false,
            answered: false,
            response: HttpResponse::default(),
            response_ts: started,
            resp_body: BodyReader::new(Framing::Empty),
            resp_framing: Framing::Empty,
            resp_head: None,
            decode: false,
            until_close: false,
            upstream_keeps: false,
            reusable: false,
            report: None,
        }
    }

    /// The same room, made ready for the next request (buffers keep their memory).
    fn reset(&mut self, head: RequestHead, framing: Framing, started: Timestamp) {
        self.keep_client = head.keep_alive();
        self.head = head;
        self.routed = None;
        self.started = started;
        self.sent = None;
        self.request = HttpRequest::default();
        self.req_body = BodyReader::new(framing);
        self.buffered.clear();
        self.seen_body = Bytes::new();
        self.copies = BodyCopies::default();
        self.answered_continue = false;
        self.resend = None;
        self.reused = false;
        self.answered = false;
        self.response = HttpResponse::default();
        self.response_ts = started;
        self.resp_body = BodyReader::new(Framing::Empty);
        self.resp_framing = Framing::Empty;
        self.resp_head = None;
        self.decode = false;
        self.until_close = false;
        self.upstream_keeps = false;
        self.reusable = false;
        self.report = None;
    }

    pub(super) fn routed(&self) -> &Routed {
        self.routed
            .as_ref()
            .expect("an exchange past routing has its route")
    }

    /// The exchange's report, with the request's body counted as it went by.
    pub(super) fn finish_report(&mut self, response_ts: Timestamp) {
        let mut request = std::mem::take(&mut self.request);
        request.body_len = request.body_len.max(self.req_body.payload());
        let mut response = std::mem::take(&mut self.response);
        self.copies.fill(&mut request, &mut response);
        if response.request.is_none() {
            response.request = Some(request.line());
        }
        self.report = Some(Report {
            request,
            response,
            request_ts: self.started,
            response_ts,
        });
    }
}

impl Exchange {
    /// Waits for a whole request head.
    pub(super) fn expect_request_head(&mut self, now: Timestamp) -> Flow {
        let max = self.bounds.max_head;
        let parsed = match RequestHead::parse(&self.client_in, Strictness::Strict) {
            Ok(Some(head)) if head.size() > max => Err("request head too large"),
            Ok(Some(head)) => Ok(Some((head.to_owned(), head.framing(Strictness::Strict)))),
            Ok(None) if self.client_in.len() > max => Err("request head too large"),
            Ok(None) => Ok(None),
            Err(HeadError::TooManyFields) => Err("too many header fields"),
            Err(e) => return self.refuse(400, &e.to_string()),
        };
        let (head, framing) = match parsed {
            Err(why) => return self.refuse(431, why),
            Ok(Some(parsed)) => parsed,
            Ok(None) => return self.await_request_head(),
        };
        self.client_in.advance(head.size());
        if head.method() == "CONNECT" {
            if self.fixed {
                return self.refuse(405, "CONNECT is served by the forward proxy");
            }
            return Flow::Out(Step::Tunnel(head.target().to_string()));
        }
        let framing = match framing {
            Ok(f) => f,
            Err(e) => return self.refuse(400, &e.to_string()),
        };
        self.ex = Some(match self.spare.take() {
            Some(mut reused) => {
                reused.reset(head, framing, now);
                reused
            }
            None => Box::new(Ex::new(head, framing, now)),
        });
        self.state = State::Routing;
        Flow::Next
    }

    /// More of a head is needed: says how long the client may take, or how it ended.
    fn await_request_head(&mut self) -> Flow {
        let between = self.client_in.is_empty();
        if let Some(why) = self.client.failed.take() {
            return Flow::Out(Step::Close(FlowEnd::Error(why)));
        }
        if self.client.timed_out.take().is_some() {
            if !between {
                let _ = self.refuse(408, "the request head did not arrive in time");
            }
            return Flow::Out(Step::Close(FlowEnd::Timeout));
        }
        if self.client.eof {
            return Flow::Out(Step::Close(if between {
                FlowEnd::Fin
            } else {
                FlowEnd::Error("the client left mid-request".into())
            }));
        }
        Flow::Out(Step::Read(Wait {
            client: Some(if between { Timer::Idle } else { Timer::Head }),
            upstream: false,
        }))
    }

    /// Where the request head goes, and who reads the exchange; or the status and reason
    /// it is refused with.
    pub(crate) fn routed(&mut self, route: Result<Routed, (u16, String)>, now: Timestamp) {
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        let route = match route {
            Ok(r) => r,
            Err((status, why)) => {
                let _ = self.refuse(status, &why);
                self.state = State::Done;
                self.ex = None;
                return;
            }
        };
        if route.details || route.hook_requests {
            ex.request = apply::request_view(&ex.head, &route.target);
        }
        if route.details && route.copy_bodies {
            ex.copies.limit = self.bounds.body_limit;
        }
        let hooks = route.hook_requests;
        ex.routed = Some(route);
        if hooks {
            if ex.head.expects_continue() && !ex.req_body.is_done() {
                // The hooks need the body now: the proxy asks the client for it.
                self.to_client
                    .push_back(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                ex.answered_continue = true;
            }
            self.state = State::BufferRequestBody;
        } else {
            let out = apply::plain_request(ex, &mut self.client_in);
            self.queue_request(out, now);
        }
    }

    /// Reads the request body (up to the limit) for the hooks.
    pub(super) fn buffer_request_body(&mut self) -> Flow {
        let limit = self.bounds.body_limit;
        let Some(ex) = self.ex.as_deref_mut() else {
            return Flow::Out(Step::Close(FlowEnd::Fin));
        };
        if let Err(e) = ex.buffered.take(&mut ex.req_body, &mut self.client_in) {
            return self.refuse(400, &format!("cannot read the request body: {e}"));
        }
        let waiting = !ex.req_body.is_done() && ex.buffered.payload.len() <= limit;
        if waiting {
            match self.client.body_news(&mut ex.req_body) {
                BodyNews::Wait => {
                    return Flow::Out(Step::Read(Wait {
                        client: Some(Timer::Stall),
                        upstream: false,
                    }))
                }
                BodyNews::Ended => {}
                BodyNews::Broken(why) => {
                    return self.refuse(400, &format!("cannot read the request body: {why}"))
                }
            }
        }
        let (seen, truncated) = ex.buffered.seen(limit);
        ex.seen_body = seen.clone();
        ex.request.body = seen;
        ex.request.body_truncated = truncated;
        ex.request.body_len = ex.buffered.payload.len() as u64;
        self.state = State::RequestHooks;
        Flow::Next
    }

    /// What the request hooks decided (the request was edited in place).
    pub(crate) fn request_verdict(&mut self, verdict: RequestVerdict, now: Timestamp) {
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        match verdict {
            RequestVerdict::Continue => {}
            RequestVerdict::Respond(response) => return self.answer(response, None, now),
            RequestVerdict::Close(reason) => {
                self.state = State::Done;
                ex.keep_client = false;
                self.closed_by = Some(reason);
                return;
            }
        }
        let out = apply::edited_request(ex);
        self.queue_request(out, now);
    }

    /// The request's first bytes are ready: on to the upstream, or to the client's 502/504
    /// when it cannot be reached.
    fn queue_request(&mut self, out: Vec<u8>, now: Timestamp) {
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        if let Some(e) = ex.routed().unreachable.clone() {
            tracing::debug!("{}", e.message());
            return self.answer(e.response(), None, now);
        }
        ex.resend = Some(out.into());
        self.state = State::Connecting { fresh: false };
    }

    /// An upstream connection is ready (`reused` from the pool): the request goes out.
    pub(crate) fn connected(&mut self, reused: bool, now: Timestamp) {
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        ex.reused = reused;
        ex.sent.get_or_insert(now);
        let first = ex.resend.take().unwrap_or_default();
        // Kept for one resend when the whole request is in it and the connection may have
        // been closed under it.
        if reused && ex.req_body.is_done() {
            ex.resend = Some(first.clone());
        }
        self.to_upstream.push_back(first);
        self.state = State::ExpectResponseHead;
    }

    /// No upstream connection could be had: the client gets the 502/504.
    pub(crate) fn connect_failed(&mut self, e: UpstreamError, now: Timestamp) {
        self.upstream_error(e, now);
    }

    /// The upstream failed before a usable response: the client gets the 502/504.
    pub(super) fn upstream_error(&mut self, e: UpstreamError, now: Timestamp) {
        tracing::debug!("{}", e.message());
        let latency = self
            .ex
            .as_deref()
            .and_then(|ex| ex.sent)
            .map(|sent| now.since(sent));
        self.answer(e.response(), latency, now);
    }

    /// Answers the client with `response` (from a plugin, or the proxy's own error) and
    /// reports the exchange. The connection goes on only when the request body was read
    /// whole (what is left of it would be taken for the next request).
    pub(super) fn answer(
        &mut self,
        mut response: HttpResponse,
        latency: Option<std::time::Duration>,
        now: Timestamp,
    ) {
        let draining = self.draining;
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        ex.keep_client &= ex.req_body.is_done() && !draining;
        let mut out = Vec::new();
        write_response(&mut out, &response, !ex.keep_client);
        self.to_client.push_back(out.into());
        response.request = Some(ex.request.line());
        response.latency = Some(latency.unwrap_or_else(|| now.since(ex.started)));
        response.body_len = response.body.len() as u64;
        ex.response = response;
        ex.reusable = false;
        ex.finish_report(now);
        self.state = State::Done;
    }

    /// Moves what the client sent of a streaming request body to the upstream. `Err` says
    /// how the connection ends when the body cannot go on.
    pub(super) fn pump_request_body(&mut self) -> Result<(), FlowEnd> {
        let Some(ex) = self.ex.as_deref_mut() else {
            return Ok(());
        };
        if ex.req_body.is_done() {
            return Ok(());
        }
        let copies = &mut ex.copies;
        let n = ex
            .req_body
            .take(&self.client_in, |p| copies.keep_request(p))
            .map_err(|e| FlowEnd::Error(format!("request body: {e}")))?;
        if n > 0 {
            self.to_upstream.push_back(split(&mut self.client_in, n));
        }
        if ex.req_body.is_done() {
            return Ok(());
        }
        match self.client.body_news(&mut ex.req_body) {
            BodyNews::Wait | BodyNews::Ended => Ok(()),
            BodyNews::Broken(why) => Err(FlowEnd::Error(format!("request body: {why}"))),
        }
    }
}

/// Pieces up to this size are copied off an input buffer rather than split from it (a split
/// makes the buffer shared until the piece is written).
const COPY_MAX: usize = 16 * 1024;

/// The first `n` bytes of `buf`, taken off it (without copying when they are many).
pub(super) fn split(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPY_MAX {
        let piece = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        piece
    } else {
        buf.split_to(n).freeze()
    }
}
