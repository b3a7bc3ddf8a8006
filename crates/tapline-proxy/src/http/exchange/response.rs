//! The response half of an exchange: its head (interim ones passed on, a `101` switching the
//! connection), its body read for the hooks, what the hooks decided, and relaying the body.

use bytes::{Buf, Bytes};
use tapline_core::{FlowEnd, ResponseVerdict, Timestamp};
use tapline_decode::http1::{BodyReader, Framing, ResponseHead, Strictness};

use super::apply;
use super::request::split;
use super::{humane, BodyNews, Exchange, Flow, State, Step, Timer, UpstreamHead, Wait};

/// Waiting for the upstream only.
const UPSTREAM: Wait = Wait {
    client: None,
    upstream: true,
};
use crate::errors::UpstreamError;

impl Exchange {
    /// Waits for the final response head, passing interim ones on; the rest of the request
    /// body streams meanwhile.
    pub(super) fn expect_response_head(&mut self, now: Timestamp) -> Flow {
        if let Err(end) = self.pump_request_body() {
            return Flow::Out(Step::Close(end));
        }
        let max = self.bounds.max_head;
        let Some(ex) = self.ex.as_deref_mut() else {
            return Flow::Out(Step::Close(FlowEnd::Fin));
        };
        let addr = ex.routed().addr;
        loop {
            let head = match ResponseHead::parse(&self.upstream_in, Strictness::Strict) {
                Ok(Some(head)) => head.to_owned(),
                Ok(None) if self.upstream_in.len() > max => {
                    let e = format!("{addr} sent a response head over {max} bytes");
                    return self.failed_upstream(UpstreamError::Unreachable(e), now);
                }
                Ok(None) => break,
                Err(e) => {
                    let e = format!("{addr} sent a bad response: {e}");
                    return self.failed_upstream(UpstreamError::Unreachable(e), now);
                }
            };
            self.upstream_in.advance(head.size());
            ex.answered = true;
            let status = head.status();
            if status == 101 && ex.head.upgrade().is_none() {
                let e = format!("{addr} switched protocols, which is not relayed");
                return self.failed_upstream(UpstreamError::Unreachable(e), now);
            }
            if status >= 200 || status == 101 {
                return self.response_head(head, now);
            }
            // Interim (100 Continue, 103 Early Hints): on to HTTP/1.1 clients, unless the
            // proxy already told the client to go on.
            if ex.head.minor() >= 1 && !ex.answered_continue {
                self.to_client.push_back(apply::interim(&head).into());
            }
        }
        let empty = self.upstream_in.is_empty();
        if let Some(why) = self.upstream.failed.take() {
            if !ex.answered && empty {
                return self.closed_upstream(now);
            }
            let e = UpstreamError::Unreachable(format!("{addr}: {why}"));
            return self.failed_upstream(e, now);
        }
        if let Some(after) = self.upstream.timed_out.take() {
            let e = format!("{addr} sent no response within {}", humane(after));
            return self.failed_upstream(UpstreamError::Timeout(e), now);
        }
        if self.upstream.eof {
            if !ex.answered && empty {
                return self.closed_upstream(now);
            }
            let e = format!("{addr} closed the connection mid-response");
            return self.failed_upstream(UpstreamError::Unreachable(e), now);
        }
        let streaming = !ex.req_body.is_done();
        Flow::Out(Step::Read(Wait {
            client: streaming.then_some(Timer::Stall),
            upstream: true,
        }))
    }

    fn failed_upstream(&mut self, e: UpstreamError, now: Timestamp) -> Flow {
        self.upstream_error(e, now);
        Flow::Next
    }

    /// The upstream closed before answering: a reused connection closed under the request
    /// is replaced once, when the whole request was in its first write; otherwise a 502.
    fn closed_upstream(&mut self, now: Timestamp) -> Flow {
        let Some(ex) = self.ex.as_deref_mut() else {
            return Flow::Next;
        };
        if ex.reused && ex.resend.is_some() {
            ex.reused = false;
            self.upstream_in.clear();
            self.to_upstream.clear();
            self.upstream = Default::default();
            self.state = State::Connecting { fresh: true };
            return Flow::Next;
        }
        let e = format!("{} closed the connection", ex.routed().addr);
        self.failed_upstream(UpstreamError::Unreachable(e), now)
    }

    /// The final response head is in.
    fn response_head(&mut self, head: UpstreamHead, now: Timestamp) -> Flow {
        let Some(ex) = self.ex.as_deref_mut() else {
            return Flow::Next;
        };
        let latency = now.since(ex.sent.unwrap_or(now));
        ex.response_ts = now;
        ex.resend = None;
        // An answer before the whole request body: the rest is never read, so neither
        // connection can carry another request.
        ex.keep_client &= ex.req_body.is_done();
        let framing = match head.framing(ex.head.method() == "HEAD", Strictness::Strict) {
            Ok(f) => f,
            Err(e) => {
                let e = format!("{} sent a bad response: {e}", ex.routed().addr);
                return self.failed_upstream(UpstreamError::Unreachable(e), now);
            }
        };
        let routed = ex.routed();
        if routed.details || routed.hook_responses {
            ex.response = head.to_response();
            ex.response.request = Some(ex.request.line());
        }
        ex.response.latency = Some(latency);
        if head.status() == 101 {
            self.to_client.push_back(apply::switched(&head).into());
            ex.keep_client = false;
            ex.finish_report(now);
            self.state = State::Switched;
            return Flow::Next;
        }
        ex.decode = framing == Framing::Chunked && ex.head.minor() == 0;
        ex.until_close = ex.decode || framing == Framing::UntilClose;
        ex.upstream_keeps = head.keep_alive() && ex.req_body.is_done();
        ex.resp_body = BodyReader::new(framing);
        ex.resp_framing = framing;
        if ex.routed().hook_responses {
            ex.buffered.clear();
            ex.resp_head = Some(head);
            self.state = State::BufferResponseBody;
            return Flow::Next;
        }
        let mut out = apply::relayed_response_head(&head, ex.decode);
        let until_close = ex.until_close;
        self.end_head(&mut out, until_close);
        self.to_client.push_back(out.into());
        self.state = State::ResponseBody;
        Flow::Next
    }

    /// Ends a response head: says whether the client connection stays open (not after an
    /// until-close body, when the client asked, or when the run drains).
    pub(super) fn end_head(&mut self, out: &mut Vec<u8>, until_close: bool) {
        let draining = self.draining;
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        ex.keep_client &= !until_close && !draining;
        if !ex.keep_client {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if ex.head.minor() == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Reads the response body (up to the limit) for the hooks.
    pub(super) fn buffer_response_body(&mut self, now: Timestamp) -> Flow {
        let limit = self.bounds.body_limit;
        let Some(ex) = self.ex.as_deref_mut() else {
            return Flow::Next;
        };
        let addr = ex.routed().addr;
        let broke_off =
            |why: String| UpstreamError::Unreachable(format!("{addr} broke off: {why}"));
        if let Err(e) = ex.buffered.take(&mut ex.resp_body, &mut self.upstream_in) {
            return self.failed_upstream(broke_off(e.to_string()), now);
        }
        if !ex.resp_body.is_done() && ex.buffered.payload.len() <= limit {
            match self.upstream.body_news(&mut ex.resp_body) {
                BodyNews::Wait => return Flow::Out(Step::Read(UPSTREAM)),
                BodyNews::Ended => ex.buffered.complete = true,
                BodyNews::Broken(why) => return self.failed_upstream(broke_off(why), now),
            }
        }
        let (seen, truncated) = ex.buffered.seen(limit);
        ex.seen_body = seen.clone();
        ex.response.body = seen;
        ex.response.body_truncated = truncated;
        ex.response.body_len = ex.buffered.payload.len() as u64;
        self.state = State::ResponseHooks;
        Flow::Next
    }

    /// What the response hooks decided (the response was edited in place).
    pub(crate) fn response_verdict(&mut self, verdict: ResponseVerdict, now: Timestamp) {
        let Some(ex) = self.ex.as_deref_mut() else {
            return;
        };
        match verdict {
            ResponseVerdict::Continue => {}
            ResponseVerdict::Replace(replacement) => {
                let latency = ex.response.latency;
                return self.answer(replacement, latency, now);
            }
            ResponseVerdict::Close(reason) => {
                ex.keep_client = false;
                self.closed_by = Some(reason);
                self.state = State::Done;
                return;
            }
        }
        let (mut out, whole) = apply::edited_response_head(ex);
        let until_close = if whole {
            !ex.buffered.complete
        } else {
            ex.until_close
        };
        let body = if !whole {
            let relayed = if ex.decode {
                &ex.buffered.payload
            } else {
                &ex.buffered.framed
            };
            Bytes::copy_from_slice(relayed)
        } else {
            ex.response.body.clone()
        };
        if whole {
            ex.response.body_len = ex.response.body.len() as u64;
            // What the upstream still has of a replaced long body is never read: its
            // connection cannot carry another request.
            ex.upstream_keeps &= ex.buffered.complete;
            ex.resp_body = BodyReader::new(Framing::Empty);
        }
        self.end_head(&mut out, until_close);
        self.to_client.push_back(out.into());
        if !body.is_empty() {
            self.to_client.push_back(body);
        }
        self.state = State::ResponseBody;
    }

    /// Relays the response body to the client in its framing (or only its payload, for an
    /// HTTP/1.0 client of a chunked body); once it ends, the exchange is done.
    pub(super) fn relay_response_body(&mut self) -> Flow {
        let Some(ex) = self.ex.as_deref_mut() else {
            return Flow::Next;
        };
        let mut broken = None;
        if !self.upstream_in.is_empty() && !ex.resp_body.is_done() {
            let copies = &mut ex.copies;
            let taken = if ex.decode {
                let mut payload = Vec::new();
                ex.resp_body
                    .take(&self.upstream_in, |p| {
                        copies.keep_response(p);
                        payload.extend_from_slice(p)
                    })
                    .map(|n| {
                        self.upstream_in.advance(n);
                        Bytes::from(payload)
                    })
            } else {
                ex.resp_body
                    .take(&self.upstream_in, |p| copies.keep_response(p))
                    .map(|n| split(&mut self.upstream_in, n))
            };
            match taken {
                Ok(out) if !out.is_empty() => self.to_client.push_back(out),
                Ok(_) => {}
                Err(e) => broken = Some(e.to_string()),
            }
        }
        if broken.is_none() && !ex.resp_body.is_done() {
            match self.upstream.body_news(&mut ex.resp_body) {
                BodyNews::Wait => return Flow::Out(Step::Read(UPSTREAM)),
                BodyNews::Ended => {}
                BodyNews::Broken(why) => broken = Some(why),
            }
        }
        if let Some(why) = &broken {
            tracing::debug!("response from {}: {why}", ex.routed().addr);
            ex.keep_client = false;
        }
        ex.reusable =
            ex.upstream_keeps && broken.is_none() && !ex.until_close && self.upstream_in.is_empty();
        ex.response.body_len = ex.response.body_len.max(ex.resp_body.payload());
        ex.finish_report(ex.response_ts);
        self.state = State::Done;
        Flow::Next
    }
}
