//! HTTP/1 connections: the forward proxy (absolute-form requests, CONNECT) and `http` mappings
//! (reverse proxy to one upstream). Every request goes through the request hooks, a pooled
//! upstream connection, then the response hooks; bodies stream in their own framing unless a
//! plugin reads them.
//!
//! One task serves a client connection and its upstream connections: it reads a head
//! (parsed in place, `head`), writes it on for the next hop, pumps the body (`wire`), and does
//! the same with the response. The proxy used hyper's server and pooled client before; that
//! took two tasks and a channel per exchange and turned every head into a header map and
//! back; doing without cut the proxy's CPU per request from 34 µs to about 21 µs, nginx's
//! level (BENCHMARKS.md). What hyper did for
//! the proxy is here instead: framing (`framing`), keep-alive on both sides, `100 Continue`,
//! head size and field count bounds, idle and stall timeouts, and re-framing plugin bodies.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::Uri;
use tapline_core::{
    Chunk, Event, EventKind, Flow, FlowEnd, FlowStats, HttpRequest, HttpResponse, Interest,
    Pipeline, Protocol, RequestVerdict, ResponseVerdict, Route, Side, Timestamp, Transaction,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::context::Shared;
use crate::errors::UpstreamError;
use crate::flows::OpenFlow;
use crate::framing::{self, BodyReader, Framing};
use crate::head::{
    is_token, short_response, valid_fields, write_field, write_fields, write_length,
    write_response, write_status_line, FramingFields, HeadError, RequestHead, ResponseHead,
};
use crate::pool::UpstreamConn;
use crate::relay::relay;
use crate::stop::Phase;
use crate::wire::{read_more, write, Buffered, Io, PumpError, Source};

/// Where a connection's requests go.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// Forward proxy: wherever each request's absolute URL says.
    Forward,
    /// `http` mapping: always this host and port.
    Fixed {
        /// Host name or IP (IPv6 without brackets).
        host: Arc<str>,
        /// Port.
        port: u16,
        /// `host:port` (IPv6 in brackets): the `Host` of every request.
        authority: Arc<str>,
    },
}

impl Upstream {
    /// The upstream of an `http` mapping to `host:port`; `None` when they make no valid
    /// `Host` value.
    pub(crate) fn fixed(host: &str, port: u16) -> Option<Upstream> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        authority.parse::<http::uri::Authority>().ok()?;
        Some(Upstream::Fixed {
            host: host.into(),
            port,
            authority: authority.into(),
        })
    }
}

/// How a client connection's serving ended.
enum Ending {
    /// The connection is done.
    Closed(FlowEnd),
    /// The client asked for a tunnel to this `host:port`.
    Tunnel(String),
    /// The upstream switched protocols (`101`): the connection relays raw bytes now.
    Upgraded(UpstreamConn),
}

/// Serves one client connection until it closes or the run stops.
pub(crate) async fn serve(
    ctx: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    upstream: Upstream,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let stop = ctx.stop.clone();
    let draining = stop.clone();
    let mut conn = HttpConn {
        ctx,
        peer,
        upstream,
        client: stream,
        buf: BytesMut::new(),
        from_client: Io::default(),
        to_client: Io::default(),
        current: None,
        closed_by: None,
        upgraded: None,
        streaming: None,
        draining: Box::pin(async move { draining.reached(Phase::Draining).await }),
    };
    let ending = tokio::select! {
        ending = conn.run() => ending,
        _ = stop.reached(Phase::Forced) => {
            conn.report_interrupted();
            Ending::Closed(FlowEnd::Shutdown)
        }
    };
    match ending {
        Ending::Closed(end) => conn.finish(end).await,
        Ending::Tunnel(target) => {
            conn.finish(FlowEnd::Fin).await;
            let HttpConn {
                ctx,
                client,
                buf,
                peer,
                ..
            } = conn;
            crate::connect::tunnel(&ctx, peer, &target, client, buf.freeze()).await;
        }
        Ending::Upgraded(up) => {
            let end = conn.switched(up).await;
            conn.finish(end).await;
        }
    }
    drop(permit);
}

/// One client connection's state.
struct HttpConn {
    ctx: Arc<Shared>,
    peer: SocketAddr,
    upstream: Upstream,
    client: TcpStream,
    /// Read from the client and not used yet.
    buf: BytesMut,
    from_client: Io,
    to_client: Io,
    /// The flow of the requests so far: a new one starts when the upstream changes.
    current: Option<ConnFlow>,
    /// Why a plugin closed the connection.
    closed_by: Option<String>,
    /// The upstream connection that switched protocols with the last exchange.
    upgraded: Option<UpstreamConn>,
    /// The response body being relayed, if any.
    streaming: Option<Streaming>,
    /// Resolves once the run drains: idle connections close then.
    draining: Pin<Box<dyn Future<Output = ()> + Send>>,
}

struct ConnFlow {
    open: OpenFlow,
    interest: Interest,
    /// The connection's totals when the flow started.
    base: FlowStats,
}

/// Where one request goes.
struct Target {
    host: String,
    port: u16,
    /// The origin-form path sent upstream.
    path: String,
    /// `host:port` as the URL has it: the `Host` when the client sent none.
    authority: String,
    /// True on mappings: `Host` is always the mapping's `authority`.
    fixed: bool,
}

impl Target {
    /// The request's absolute URL (for the messages plugins and outputs see).
    fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

impl HttpConn {
    async fn run(&mut self) -> Ending {
        loop {
            let head = match self.next_head().await {
                Ok(head) => head,
                Err(end) => return Ending::Closed(end),
            };
            if head.method() == "CONNECT" {
                return match self.upstream {
                    Upstream::Forward => Ending::Tunnel(head.target().to_string()),
                    Upstream::Fixed { .. } => Ending::Closed(
                        self.refuse(405, "CONNECT is served by the forward proxy")
                            .await,
                    ),
                };
            }
            if let Some(end) = self.exchange(head).await {
                return match self.upgraded.take() {
                    Some(up) => Ending::Upgraded(up),
                    None => Ending::Closed(end),
                };
            }
            if self.ctx.stop.is(Phase::Draining) {
                return Ending::Closed(FlowEnd::Fin);
            }
        }
    }

    /// The next request head; between requests an idle connection closes at the idle
    /// timeout or when the run drains. A head must be whole within the idle timeout of its
    /// first byte (a client dribbling a head byte by byte gets a 408, not a held connection).
    async fn next_head(&mut self) -> Result<RequestHead, FlowEnd> {
        let max = self.ctx.limits.max_header_size;
        let idle = self.ctx.limits.idle_timeout;
        let mut deadline = None;
        loop {
            match RequestHead::parse(&mut self.buf) {
                Ok(Some(head)) if head.size() > max => {
                    return Err(self.refuse(431, "request head too large").await)
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) if self.buf.len() > max => {
                    return Err(self.refuse(431, "request head too large").await)
                }
                Ok(None) => {}
                Err(HeadError::TooManyFields) => {
                    return Err(self.refuse(431, "too many header fields").await)
                }
                Err(e) => return Err(self.refuse(400, &e.to_string()).await),
            }
            let between = self.buf.is_empty();
            let read = read_more(&mut self.client, &mut self.buf, idle, &mut self.from_client);
            let read = if between {
                tokio::select! {
                    r = read => r,
                    _ = self.draining.as_mut() => return Err(FlowEnd::Fin),
                }
            } else {
                let by = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + idle);
                match tokio::time::timeout_at(by, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.refuse(408, "the request head did not arrive in time")
                            .await;
                        return Err(FlowEnd::Timeout);
                    }
                }
            };
            match read {
                Ok(0) if between => return Err(FlowEnd::Fin),
                Ok(0) => return Err(FlowEnd::Error("the client left mid-request".into())),
                Ok(_) => {}
                Err(PumpError::Stalled(_)) => return Err(FlowEnd::Timeout),
                Err(e) => return Err(FlowEnd::Error(e.to_string())),
            }
        }
    }

    /// Answers a request the proxy cannot serve, then closes.
    async fn refuse(&mut self, status: u16, why: &str) -> FlowEnd {
        let mut out = Vec::new();
        write_response(
            &mut out,
            &short_response(status, &format!("tapline: {why}")),
            true,
        );
        let _ = write(&mut self.client, &out, &mut self.to_client).await;
        FlowEnd::Fin
    }

    /// The request's upstream, path and URL; a status and reason for requests this
    /// listener cannot serve.
    fn target(&self, head: &RequestHead) -> Result<Target, (u16, &'static str)> {
        let raw = head.target();
        match &self.upstream {
            Upstream::Fixed {
                host,
                port,
                authority,
            } => {
                let path = if raw.starts_with('/') {
                    raw.to_string()
                } else {
                    let uri: Uri = raw.parse().map_err(|_| (400, "invalid request target"))?;
                    path_of(&uri)
                };
                Ok(Target {
                    host: host.to_string(),
                    port: *port,
                    path,
                    authority: authority.to_string(),
                    fixed: true,
                })
            }
            Upstream::Forward => {
                let uri: Uri = raw.parse().map_err(|_| (400, "invalid request target"))?;
                match uri.scheme_str() {
                    Some(s) if s.eq_ignore_ascii_case("http") => {}
                    Some(_) => {
                        return Err((
                            400,
                            "only http:// URLs are forwarded; HTTPS goes through CONNECT",
                        ))
                    }
                    None => {
                        return Err((
                            400,
                            "this is a forward proxy: send absolute-form requests (curl -x)",
                        ))
                    }
                }
                let Some(authority) = uri.authority() else {
                    return Err((400, "the URL has no host"));
                };
                Ok(Target {
                    host: authority.host().to_string(),
                    port: authority.port_u16().unwrap_or(80),
                    path: path_of(&uri),
                    // `host[:port]` without any `user:pass@`, which is no `Host` value.
                    authority: match authority.port() {
                        Some(port) => format!("{}:{port}", authority.host()),
                        None => authority.host().to_string(),
                    },
                    fixed: false,
                })
            }
        }
    }

    /// The flow for requests to `addr`: the current one, or a new one when the upstream
    /// changed (the old one ends).
    async fn flow_for(&mut self, addr: SocketAddr) -> (Arc<Flow>, Interest) {
        if let Some(cf) = &self.current {
            if cf.open.flow().server == addr {
                return (cf.open.flow().clone(), cf.interest);
            }
        }
        if let Some(old) = self.current.take() {
            let stats = since(self.totals(), old.base);
            old.open.end(&self.ctx.pipeline, stats, FlowEnd::Fin).await;
        }
        let route = match self.upstream {
            Upstream::Forward => Route::Forward,
            Upstream::Fixed { .. } => Route::Mapping,
        };
        let open = OpenFlow::start(
            &self.ctx.pipeline,
            &self.ctx.ids,
            Protocol::Http,
            route,
            self.peer,
            addr,
        )
        .await;
        let interest = self.ctx.pipeline.interest(open.flow());
        let flow = open.flow().clone();
        self.current = Some(ConnFlow {
            open,
            interest,
            base: self.totals(),
        });
        (flow, interest)
    }

    /// The client connection's totals: what the client sent, what the proxy wrote to it.
    fn totals(&self) -> FlowStats {
        FlowStats {
            bytes_from_client: self.from_client.bytes,
            bytes_from_server: self.to_client.bytes,
            packets_from_client: self.from_client.calls,
            packets_from_server: self.to_client.calls,
        }
    }

    /// The connection closed: the open flow ends.
    async fn finish(&mut self, end: FlowEnd) {
        let Some(cf) = self.current.take() else {
            return;
        };
        let end = match self.closed_by.take() {
            Some(reason) => FlowEnd::ClosedByPlugin(reason),
            None => end,
        };
        let stats = since(self.totals(), cf.base);
        cf.open.end(&self.ctx.pipeline, stats, end).await;
    }

    /// One request and its response. `None` when the connection carries the next request,
    /// else how it ends.
    async fn exchange(&mut self, head: RequestHead) -> Option<FlowEnd> {
        let started = Timestamp::now();
        let target = match self.target(&head) {
            Ok(t) => t,
            Err((status, why)) => return Some(self.refuse(status, why).await),
        };
        let framing = match framing::of_request(&head.fields) {
            Ok(f) => f,
            Err(e) => return Some(self.refuse(400, &e.to_string()).await),
        };
        let (addr, unreachable) = match self.ctx.http_upstream(&target.host, target.port).await {
            Ok(addr) => (addr, None),
            Err(e @ UpstreamError::Loop(_)) => return Some(self.refuse(508, e.message()).await),
            // The request hooks still run, so a plugin can answer for a name that does not
            // resolve (a mocked API); without an answer the client gets the 502/504.
            Err(e) => (SocketAddr::from(([0, 0, 0, 0], target.port)), Some(e)),
        };
        let (flow, interest) = self.flow_for(addr).await;
        let request = if interest.http() || self.ctx.http_details {
            let host = if target.fixed { "" } else { &target.authority };
            head.view(&target.path, target.url(), host)
        } else {
            HttpRequest::default()
        };
        let mut ex = Exchange {
            flow,
            interest,
            started,
            keep_client: head.keep_alive(),
            client_minor: head.minor,
            head_request: head.method() == "HEAD",
            request,
            body: BodyReader::new(framing),
            answered_continue: false,
            upgrade: head.upgrade().map(Bytes::copy_from_slice),
        };
        let out = if interest.requests {
            match self.request_hooks(&mut ex, &head, &target).await {
                Prepared::Send(out) => out,
                Prepared::Answered(next) => return next,
            }
        } else {
            self.plain_request(&mut ex, &head, &target)
        };
        if let Some(e) = unreachable {
            tracing::debug!("{}", e.message());
            return self.answer(&mut ex, e.response(), None).await;
        }
        self.relay(ex, addr, out).await
    }

    /// The head (and the body bytes already read) sent upstream when no plugin reads HTTP:
    /// fields as received, hop-by-hop ones left out.
    fn plain_request(&mut self, ex: &mut Exchange, head: &RequestHead, target: &Target) -> Vec<u8> {
        let mut out = Vec::with_capacity(head.size() + 64);
        start_request(&mut out, head.method(), &target.path);
        let upgrade = ex.upgrade.as_deref();
        write_request_fields(
            &mut out,
            head.fields.iter(),
            target,
            FramingFields::Keep,
            upgrade,
        );
        out.extend_from_slice(b"\r\n");
        // A small body usually came with the head: one write sends both. Bad framing shows
        // when the body is pumped.
        if let Ok(n) = ex.body.take(&self.buf, None) {
            out.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
        }
        out
    }

    /// Reads the body (up to the limit) and runs the request hooks.
    async fn request_hooks(
        &mut self,
        ex: &mut Exchange,
        head: &RequestHead,
        target: &Target,
    ) -> Prepared {
        let limit = self.ctx.limits.body_limit;
        if head.expects_continue() && !ex.body.is_done() {
            // The plugins need the body now: the proxy asks the client for it.
            let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
            if write(&mut self.client, cont, &mut self.to_client)
                .await
                .is_err()
            {
                return Prepared::Answered(Some(FlowEnd::Error("the client left".into())));
            }
            ex.answered_continue = true;
        }
        let buffered = Source {
            from: &mut self.client,
            buf: &mut self.buf,
            read: &mut self.from_client,
            idle: self.ctx.limits.idle_timeout,
        }
        .buffer(&mut ex.body, limit)
        .await;
        let buffered = match buffered {
            Ok(b) => b,
            Err(e) => {
                let why = format!("cannot read the request body: {e}");
                return Prepared::Answered(Some(self.refuse(400, &why).await));
            }
        };
        let (seen, truncated) = seen(&buffered, limit);
        ex.request.body = seen;
        ex.request.body_truncated = truncated;
        ex.request.body_len = buffered.payload.len() as u64;
        let before = ex.request.clone();
        match self.ctx.pipeline.request(&ex.flow, &mut ex.request).await {
            RequestVerdict::Continue => {}
            RequestVerdict::Respond(resp) => {
                return Prepared::Answered(self.answer(ex, resp, None).await);
            }
            RequestVerdict::Close(reason) => {
                self.closed_by = Some(reason);
                return Prepared::Answered(Some(FlowEnd::Fin));
            }
        }
        let req = &mut ex.request;
        if req.method != before.method && !is_token(&req.method) {
            tracing::warn!("ignoring invalid method {:?} set by a plugin", req.method);
            req.method = before.method.clone();
        }
        if req.path != before.path && !is_origin_form(&req.path) {
            tracing::warn!("ignoring invalid path {:?} set by a plugin", req.path);
            req.path = before.path.clone();
        }
        let mut out = Vec::with_capacity(head.size() + req.body.len() + 64);
        start_request(&mut out, &req.method, &req.path);
        let valid = valid_fields(&req.headers);
        let answered_continue = ex.answered_continue;
        let upgrade = ex.upgrade.as_deref();
        let fields = valid
            .iter()
            .copied()
            .filter(|(n, _)| !(answered_continue && n.eq_ignore_ascii_case(b"expect")));
        if buffered.complete || req.body != before.body {
            // The whole body is known (or replaced): framed by its length.
            write_request_fields(&mut out, fields, target, FramingFields::Drop, upgrade);
            // A request that came without a body (a GET) does not gain a `Content-Length: 0`.
            let framed = head.fields.get(b"content-length").is_some()
                || head.fields.get(b"transfer-encoding").is_some();
            if framed || !req.body.is_empty() {
                write_length(&mut out, req.body.len() as u64);
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&req.body);
            req.body_len = req.body.len() as u64;
            if !buffered.complete {
                // The rest of the replaced body is never read: the connection cannot go on.
                ex.keep_client = false;
                ex.body = BodyReader::new(Framing::Empty);
            }
        } else {
            // Longer than the limit and unchanged: relayed as framed, the rest streams on.
            write_request_fields(&mut out, fields, target, FramingFields::Keep, upgrade);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&buffered.framed);
        }
        Prepared::Send(out)
    }

    /// Sends the request upstream and relays the response.
    async fn relay(&mut self, mut ex: Exchange, addr: SocketAddr, out: Vec<u8>) -> Option<FlowEnd> {
        let idle = self.ctx.limits.idle_timeout;
        let sent = Instant::now();
        // A reused connection the upstream closed just before the request went out is
        // replaced, once, when the whole request was in that first write.
        let resendable = ex.body.is_done();
        let mut reuse = true;
        let (mut up, head) = loop {
            let pooled = if reuse {
                self.ctx.pool.take(addr)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(conn) => conn,
                None => match self.ctx.connect_addr(addr).await {
                    Ok(stream) => UpstreamConn::new(stream),
                    Err(e) => return self.upstream_failed(&mut ex, e, sent).await,
                },
            };
            match self.send(&mut ex, &mut up, &out, addr).await {
                Ok(head) => break (up, head),
                Err(Failure::Closed) if reused && resendable => reuse = false,
                Err(Failure::Closed) => {
                    let e = UpstreamError::Unreachable(format!("{addr} closed the connection"));
                    return self.upstream_failed(&mut ex, e, sent).await;
                }
                Err(Failure::Upstream(e)) => return self.upstream_failed(&mut ex, e, sent).await,
                Err(Failure::Client(end)) => return Some(end),
            }
        };
        let latency = sent.elapsed();
        let head_ts = Timestamp::now();
        // An answer that came before the whole request body: the rest is never read, so
        // neither connection can carry another request.
        ex.keep_client &= ex.body.is_done();
        let framing = match framing::of_response(&head.fields, head.status, ex.head_request) {
            Ok(f) => f,
            Err(e) => {
                let e = UpstreamError::Unreachable(format!("{addr} sent a bad response: {e}"));
                return self.upstream_failed(&mut ex, e, sent).await;
            }
        };
        let mut response = if ex.interest.http() || self.ctx.http_details {
            let mut view = head.view();
            view.request = Some(ex.request.line());
            view
        } else {
            HttpResponse::default()
        };
        response.latency = Some(latency);
        if head.status == 101 {
            return self.switch(ex, head, response, head_ts, up).await;
        }
        let mut body = BodyReader::new(framing);
        // Chunks are for HTTP/1.1 clients; an HTTP/1.0 one gets the payload until close.
        let decode = framing == Framing::Chunked && ex.client_minor == 0;
        let until_close = decode || framing == Framing::UntilClose;
        let mut upstream_keeps = head.keep_alive() && ex.body.is_done();
        let mut client_out = Vec::with_capacity(head.size() + 64);
        if ex.interest.responses {
            let buffered = Source {
                from: &mut up.stream,
                buf: &mut up.buf,
                read: &mut Io::default(),
                idle,
            }
            .buffer(&mut body, self.ctx.limits.body_limit)
            .await;
            let buffered = match buffered {
                Ok(b) => b,
                Err(e) => {
                    let e = UpstreamError::Unreachable(format!("{addr} broke off: {e}"));
                    return self.upstream_failed(&mut ex, e, sent).await;
                }
            };
            let (seen, truncated) = seen(&buffered, self.ctx.limits.body_limit);
            response.body = seen;
            response.body_truncated = truncated;
            response.body_len = buffered.payload.len() as u64;
            let before = response.clone();
            match self.ctx.pipeline.response(&ex.flow, &mut response).await {
                ResponseVerdict::Continue => {}
                ResponseVerdict::Replace(new) => {
                    return self.answer(&mut ex, new, Some(latency)).await
                }
                ResponseVerdict::Close(reason) => {
                    self.closed_by = Some(reason);
                    return Some(FlowEnd::Fin);
                }
            }
            if response.status != before.status && !(100..=999).contains(&response.status) {
                tracing::warn!(
                    "ignoring invalid status {} set by a plugin",
                    response.status
                );
                response.status = before.status;
            }
            let reason = if response.status == head.status {
                String::from_utf8_lossy(head.reason()).into_owned()
            } else {
                tapline_core::http::reason_phrase(response.status).to_string()
            };
            write_status_line(&mut client_out, response.status, reason.as_bytes());
            let valid = valid_fields(&response.headers);
            if buffered.complete || response.body != before.body {
                // Known whole (or replaced): framed by its length.
                write_fields(&mut client_out, valid.iter().copied(), FramingFields::Drop);
                if !(ex.head_request || framing == Framing::Empty && response.body.is_empty()) {
                    write_length(&mut client_out, response.body.len() as u64);
                }
                self.end_head(&mut client_out, &mut ex, !buffered.complete);
                client_out.extend_from_slice(&response.body);
                response.body_len = response.body.len() as u64;
                // What the upstream still has of a replaced long body is never read: its
                // connection cannot carry another request.
                upstream_keeps &= buffered.complete;
                body = BodyReader::new(Framing::Empty);
            } else {
                let kept = relayed_framing(&head.fields, decode);
                write_fields(&mut client_out, valid.iter().copied(), kept);
                self.end_head(&mut client_out, &mut ex, until_close);
                if decode {
                    client_out.extend_from_slice(&buffered.payload);
                } else {
                    client_out.extend_from_slice(&buffered.framed);
                }
            }
        } else {
            write_status_line(&mut client_out, head.status, head.reason());
            let kept = relayed_framing(&head.fields, decode);
            write_fields(&mut client_out, head.fields.iter(), kept);
            self.end_head(&mut client_out, &mut ex, until_close);
            if !decode {
                // A small body usually came with the head: one write sends both. Bad
                // framing shows when the body is pumped.
                if let Ok(n) = body.take(&up.buf, None) {
                    client_out.extend_from_slice(&up.buf[..n]);
                    up.buf.advance(n);
                }
            }
        }
        let mut result = write(&mut self.client, &client_out, &mut self.to_client).await;
        if result.is_ok() && !body.is_done() {
            // Parked here while the body streams, for a forced stop to report.
            self.streaming = Some(Streaming {
                flow: ex.flow.clone(),
                started: ex.started,
                request: std::mem::take(&mut ex.request),
                response: std::mem::take(&mut response),
                response_ts: head_ts,
                written: self.to_client.bytes,
            });
            result = Source {
                from: &mut up.stream,
                buf: &mut up.buf,
                read: &mut Io::default(),
                idle,
            }
            .pump(&mut body, &mut self.client, &mut self.to_client, decode)
            .await;
            if let Some(parked) = self.streaming.take() {
                ex.request = parked.request;
                response = parked.response;
            }
        }
        response.body_len = response.body_len.max(body.payload);
        if let Err(e) = &result {
            tracing::debug!("response from {addr}: {e}");
            ex.keep_client = false;
        }
        let reusable = upstream_keeps && result.is_ok() && !until_close && up.buf.is_empty();
        if reusable {
            self.ctx.pool.put_back(addr, up);
        }
        self.report(&mut ex, response, head_ts)
    }

    /// Passes the upstream's `101 Switching Protocols` on (no hooks: it has no body); the
    /// connection relays raw bytes from now on.
    async fn switch(
        &mut self,
        mut ex: Exchange,
        head: ResponseHead,
        response: HttpResponse,
        head_ts: Timestamp,
        up: UpstreamConn,
    ) -> Option<FlowEnd> {
        let mut out = Vec::with_capacity(head.size() + 64);
        write_status_line(&mut out, head.status, head.reason());
        write_fields(&mut out, head.fields.iter(), FramingFields::Keep);
        if let Some(protocols) = head.fields.get(b"upgrade") {
            write_upgrade(&mut out, protocols);
        }
        out.extend_from_slice(b"\r\n");
        let written = write(&mut self.client, &out, &mut self.to_client).await;
        ex.keep_client = false;
        self.report(&mut ex, response, head_ts);
        if written.is_ok() {
            self.upgraded = Some(up);
        }
        Some(FlowEnd::Fin)
    }

    /// Relays raw bytes between the client and `up` after a protocol switch, on the same
    /// flow (its chunk hooks and outputs see them); says how the flow ends.
    async fn switched(&mut self, mut up: UpstreamConn) -> FlowEnd {
        let Some(flow) = self.current.as_ref().map(|cf| cf.open.flow().clone()) else {
            return FlowEnd::Fin;
        };
        // Bytes either side sent right after the switch were read with its head.
        if !self.buf.is_empty() {
            if let Err(e) = up.stream.write_all(&self.buf).await {
                return FlowEnd::Error(format!("the upstream left: {e}"));
            }
            self.buf.clear();
        }
        let first = (!up.buf.is_empty()).then(|| Chunk {
            from: Side::Server,
            data: up.buf.split().freeze(),
        });
        let (stats, end) = relay(
            &self.ctx,
            &flow,
            &mut self.client,
            &mut up.stream,
            first,
            None,
        )
        .await;
        self.from_client.bytes += stats.bytes_from_client;
        self.from_client.calls += stats.packets_from_client;
        self.to_client.bytes += stats.bytes_from_server;
        self.to_client.calls += stats.packets_from_server;
        end
    }

    /// Writes the request to `up` and reads the response head, passing interim responses
    /// to the client; the rest of the request body streams meanwhile.
    async fn send(
        &mut self,
        ex: &mut Exchange,
        up: &mut UpstreamConn,
        out: &[u8],
        addr: SocketAddr,
    ) -> Result<ResponseHead, Failure> {
        if up.stream.write_all(out).await.is_err() {
            return Err(Failure::Closed);
        }
        let idle = self.ctx.limits.idle_timeout;
        let (mut cr, mut cw) = self.client.split();
        let (mut ur, mut uw) = up.stream.split();
        let reading = HeadReader {
            from: &mut ur,
            buf: &mut up.buf,
            client: &mut cw,
            to_client: &mut self.to_client,
            pass_interim: ex.client_minor >= 1 && !ex.answered_continue,
            upgrade_asked: ex.upgrade.is_some(),
            max: self.ctx.limits.max_header_size,
            idle,
            addr,
        }
        .read();
        if ex.body.is_done() {
            return reading.await;
        }
        // The request body streams while the response may already come (an early error,
        // or interim responses such as 100 Continue).
        let mut client = Source {
            from: &mut cr,
            buf: &mut self.buf,
            read: &mut self.from_client,
            idle,
        };
        let mut uncounted = Io::default();
        let uploading = client.pump(&mut ex.body, &mut uw, &mut uncounted, false);
        tokio::pin!(uploading);
        tokio::pin!(reading);
        tokio::select! {
            head = &mut reading => head,
            uploaded = &mut uploading => match uploaded {
                Ok(()) => reading.await,
                Err(e @ PumpError::Write(_)) => Err(Failure::Upstream(
                    UpstreamError::Unreachable(format!("{addr} stopped reading: {e}")),
                )),
                Err(e) => Err(Failure::Client(FlowEnd::Error(format!("request body: {e}")))),
            },
        }
    }

    /// Ends a response head: says whether the connection stays open (it closes after an
    /// until-close body, when the client asked, or when the run drains).
    fn end_head(&self, out: &mut Vec<u8>, ex: &mut Exchange, until_close: bool) {
        ex.keep_client &= !until_close && !self.ctx.stop.is(Phase::Draining);
        if !ex.keep_client {
            out.extend_from_slice(b"connection: close\r\n");
        } else if ex.client_minor == 0 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The upstream could not answer: the client gets the 502/504.
    async fn upstream_failed(
        &mut self,
        ex: &mut Exchange,
        e: UpstreamError,
        sent: Instant,
    ) -> Option<FlowEnd> {
        tracing::debug!("{}", e.message());
        self.answer(ex, e.response(), Some(sent.elapsed())).await
    }

    /// Answers the client with `resp` (from a plugin, or the proxy's own error) and reports
    /// the exchange. The connection goes on only when the request body was read whole (what
    /// is left of it would be taken for the next request).
    async fn answer(
        &mut self,
        ex: &mut Exchange,
        mut resp: HttpResponse,
        latency: Option<Duration>,
    ) -> Option<FlowEnd> {
        ex.keep_client &= ex.body.is_done() && !self.ctx.stop.is(Phase::Draining);
        let mut out = Vec::new();
        write_response(&mut out, &resp, !ex.keep_client);
        if write(&mut self.client, &out, &mut self.to_client)
            .await
            .is_err()
        {
            ex.keep_client = false;
        }
        resp.request = Some(ex.request.line());
        resp.latency = Some(latency.unwrap_or_else(|| Timestamp::now().since(ex.started)));
        resp.body_len = resp.body.len() as u64;
        self.report(ex, resp, Timestamp::now())
    }

    /// Reports the exchange's events; says whether the connection goes on.
    fn report(
        &self,
        ex: &mut Exchange,
        response: HttpResponse,
        response_ts: Timestamp,
    ) -> Option<FlowEnd> {
        let mut request = std::mem::take(&mut ex.request);
        request.body_len = request.body_len.max(ex.body.payload);
        let times = (ex.started, response_ts);
        emit_exchange(&self.ctx.pipeline, &ex.flow, times, request, response);
        (!ex.keep_client).then_some(FlowEnd::Fin)
    }

    /// The run was forced to stop while a response body was on its way: the exchange is
    /// reported with the bytes that made it.
    fn report_interrupted(&mut self) {
        let Some(s) = self.streaming.take() else {
            return;
        };
        let mut response = s.response;
        let sent = self.to_client.bytes - s.written;
        response.body_len = response.body_len.max(sent);
        let times = (s.started, s.response_ts);
        emit_exchange(&self.ctx.pipeline, &s.flow, times, s.request, response);
    }
}

/// Sends one exchange's events: the request, the response, and the transaction pairing them.
fn emit_exchange(
    pipeline: &Pipeline,
    flow: &Arc<Flow>,
    (request_ts, response_ts): (Timestamp, Timestamp),
    request: HttpRequest,
    mut response: HttpResponse,
) {
    let latency = response.latency.unwrap_or_default();
    if response.request.is_none() {
        response.request = Some(request.line());
    }
    let events = [
        (request_ts, EventKind::HttpRequest(request.clone())),
        (response_ts, EventKind::HttpResponse(response.clone())),
        (
            response_ts,
            EventKind::Transaction(Transaction::Http {
                request: Box::new(request),
                response: Box::new(response),
                latency,
            }),
        ),
    ];
    for (ts, kind) in events {
        pipeline.emit(&Event::on_flow(flow, ts, kind));
    }
}

/// A response body on its way to the client, and what to report if the run is forced to
/// stop before it ends.
struct Streaming {
    flow: Arc<Flow>,
    started: Timestamp,
    request: HttpRequest,
    response: HttpResponse,
    response_ts: Timestamp,
    /// The bytes written to the client when the body began.
    written: u64,
}

/// What the request hooks decided.
enum Prepared {
    /// Send this upstream (head and the body read so far).
    Send(Vec<u8>),
    /// A plugin answered, or the connection ends; `None` when it carries the next request.
    Answered(Option<FlowEnd>),
}

/// One request on its way.
struct Exchange {
    flow: Arc<Flow>,
    interest: Interest,
    started: Timestamp,
    /// The client keeps the connection after this exchange (so far).
    keep_client: bool,
    client_minor: u8,
    head_request: bool,
    /// The request as plugins and outputs see it (empty when nobody reads it).
    request: HttpRequest,
    /// The request body still to come from the client.
    body: BodyReader,
    /// The proxy itself told the client to send the body.
    answered_continue: bool,
    /// The protocols the client asked to switch to (`Upgrade` with `Connection: upgrade`).
    upgrade: Option<Bytes>,
}

/// Why sending a request upstream failed.
enum Failure {
    /// The connection closed (or reset) before any response byte.
    Closed,
    /// The upstream failed otherwise: the client gets a 502/504.
    Upstream(UpstreamError),
    /// The client failed: the connection ends.
    Client(FlowEnd),
}

/// Reads a response head from the upstream.
struct HeadReader<'a, R, W> {
    from: &'a mut R,
    buf: &'a mut BytesMut,
    client: &'a mut W,
    to_client: &'a mut Io,
    /// Interim (1xx) responses go on to the client.
    pass_interim: bool,
    /// The client asked to switch protocols: a `101` is the final answer.
    upgrade_asked: bool,
    max: usize,
    idle: Duration,
    addr: SocketAddr,
}

impl<R, W> HeadReader<'_, R, W>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    /// The final response head (interim ones passed on or dropped).
    async fn read(self) -> Result<ResponseHead, Failure> {
        let addr = self.addr;
        let bad = |why: String| Failure::Upstream(UpstreamError::Unreachable(why));
        let mut got_any = false;
        loop {
            match ResponseHead::parse(self.buf) {
                Ok(Some(head)) if head.status == 101 && self.upgrade_asked => return Ok(head),
                Ok(Some(head)) if head.status == 101 => {
                    return Err(bad(format!(
                        "{addr} switched protocols, which is not relayed"
                    )))
                }
                Ok(Some(head)) if head.status < 200 => {
                    got_any = true;
                    if self.pass_interim {
                        let mut out = Vec::new();
                        write_status_line(&mut out, head.status, head.reason());
                        write_fields(&mut out, head.fields.iter(), FramingFields::Keep);
                        out.extend_from_slice(b"\r\n");
                        if write(self.client, &out, self.to_client).await.is_err() {
                            return Err(Failure::Client(FlowEnd::Error("the client left".into())));
                        }
                    }
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) if self.buf.len() > self.max => {
                    return Err(bad(format!(
                        "{addr} sent a response head over {} bytes",
                        self.max
                    )))
                }
                Ok(None) => {}
                Err(e) => return Err(bad(format!("{addr} sent a bad response: {e}"))),
            }
            match read_more(self.from, self.buf, self.idle, &mut Io::default()).await {
                Ok(0) | Err(PumpError::Read(_)) if !got_any && self.buf.is_empty() => {
                    return Err(Failure::Closed)
                }
                Ok(0) => return Err(bad(format!("{addr} closed the connection mid-response"))),
                Ok(_) => got_any = true,
                Err(PumpError::Stalled(d)) => {
                    return Err(Failure::Upstream(UpstreamError::Timeout(format!(
                        "{addr} sent no response within {}",
                        humane(d)
                    ))))
                }
                Err(e) => return Err(bad(format!("{addr}: {e}"))),
            }
        }
    }
}

/// `METHOD path HTTP/1.1` and its line end.
fn start_request(out: &mut Vec<u8>, method: &str, path: &str) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// A request's fields for the upstream: `Host` first (the mapping's, or the URL's when the
/// client sent none), then the rest without hop-by-hop fields.
fn write_request_fields<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    target: &Target,
    framing: FramingFields,
    upgrade: Option<&[u8]>,
) {
    let has_host = fields.clone().any(|(n, _)| n.eq_ignore_ascii_case(b"host"));
    if target.fixed || !has_host {
        write_field(out, b"Host", target.authority.as_bytes());
    }
    if target.fixed {
        let others = fields.filter(|(n, _)| !n.eq_ignore_ascii_case(b"host"));
        write_fields(out, others, framing);
    } else {
        write_fields(out, fields, framing);
    }
    // Hop-by-hop, yet asked of the upstream on the client's behalf.
    if let Some(protocols) = upgrade {
        write_upgrade(out, protocols);
    }
}

/// `Upgrade` and the `Connection` option that goes with it.
fn write_upgrade(out: &mut Vec<u8>, protocols: &[u8]) {
    write_field(out, b"Upgrade", protocols);
    write_field(out, b"Connection", b"upgrade");
}

/// Which framing fields a relayed response keeps: `Transfer-Encoding` wins over
/// `Content-Length`; a decoded body has neither.
fn relayed_framing(fields: &crate::head::Fields, decode: bool) -> FramingFields {
    if decode {
        FramingFields::Drop
    } else if fields.get(b"transfer-encoding").is_some() {
        FramingFields::DropLength
    } else {
        FramingFields::Keep
    }
}

/// What plugins see of a buffered body: at most `limit` bytes, and whether that is all.
fn seen(buffered: &Buffered, limit: usize) -> (Bytes, bool) {
    let n = buffered.payload.len().min(limit);
    (
        Bytes::copy_from_slice(&buffered.payload[..n]),
        !buffered.complete || buffered.payload.len() > limit,
    )
}

/// `path?query` of a URI, `/` when it has none.
fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/")
        .to_string()
}

/// True for a path a plugin may set: origin form, no spaces or line breaks.
fn is_origin_form(s: &str) -> bool {
    s.starts_with('/') && s.parse::<http::uri::PathAndQuery>().is_ok()
}

/// The totals between two snapshots.
fn since(now: FlowStats, base: FlowStats) -> FlowStats {
    FlowStats {
        bytes_from_client: now.bytes_from_client - base.bytes_from_client,
        bytes_from_server: now.bytes_from_server - base.bytes_from_server,
        packets_from_client: now.packets_from_client - base.packets_from_client,
        packets_from_server: now.packets_from_server - base.packets_from_server,
    }
}

fn humane(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
