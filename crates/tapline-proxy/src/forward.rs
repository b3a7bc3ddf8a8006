//! HTTP connections: the forward proxy (absolute-form requests, CONNECT) and `http` mappings
//! (reverse proxy to one upstream). Every request goes through the request hooks, the pooled
//! upstream client, then the response hooks; bodies stream unless a plugin reads them.
//!
//! hyper serves the client side (parsing, keep-alive, chunked framing, header size bound,
//! idle timeout between requests, CONNECT upgrades) and its legacy pooled client the upstream
//! side (keep-alive pool per upstream): both are the parts of a proxy that must be exactly
//! right and that hyper already gets right, and both preserve header case.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tapline_core::{
    Event, EventKind, Flow, FlowEnd, HttpRequest, HttpResponse, Interest, Pipeline, Protocol,
    RequestVerdict, ResponseVerdict, Route, Timestamp, Transaction,
};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{self, Buffered, Counted, ProxyBody};
use crate::context::Shared;
use crate::counted_io::{since, CountedIo, IoCounts};
use crate::errors::UpstreamError;
use crate::flows::OpenFlow;
use crate::hop_by_hop;
use crate::http_convert::{
    map_from_headers, request_view, response_from, response_view, set_content_length,
    short_response,
};
use crate::stop::Phase;

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
        /// `host:port` (IPv6 in brackets): the `Host` of every request, built once.
        authority: HeaderValue,
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
        Some(Upstream::Fixed {
            host: host.into(),
            port,
            authority: HeaderValue::from_str(&authority).ok()?,
        })
    }
}

/// A plugin closed the client connection (the service's error, so hyper closes it).
#[derive(Debug, thiserror::Error)]
#[error("closed by plugin: {0}")]
pub(crate) struct ClosedByPlugin(String);

/// Serves one client connection until it closes or the run stops.
pub(crate) async fn serve(
    ctx: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    upstream: Upstream,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let io = Arc::new(IoCounts::default());
    let conn = Arc::new(HttpConn {
        ctx: ctx.clone(),
        peer,
        upstream,
        io: io.clone(),
        permit: Arc::new(permit),
        current: tokio::sync::Mutex::new(None),
        closed_by: Mutex::new(None),
    });
    let handler = conn.clone();
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { handler.handle(req).await }
    });
    let served = ctx
        .http
        .serve_connection(TokioIo::new(CountedIo::new(stream, io)), service)
        .with_upgrades();
    // Boxed rather than pinned in place, so that it can be dropped before the flow ends.
    let mut served = Box::pin(served);
    let mut draining = false;
    let end = loop {
        tokio::select! {
            r = served.as_mut() => break match r {
                Ok(()) => FlowEnd::Fin,
                Err(e) if e.is_timeout() => FlowEnd::Timeout,
                Err(e) => FlowEnd::Error(e.to_string()),
            },
            _ = ctx.stop.reached(Phase::Draining), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = ctx.stop.reached(Phase::Forced) => break FlowEnd::Shutdown,
        }
    };
    // A response still streaming when the run is forced to stop reports its exchange as it
    // is dropped: before the flow's end, not after.
    drop(served);
    conn.finish(end).await;
}

/// One client connection's state.
struct HttpConn {
    ctx: Arc<Shared>,
    peer: SocketAddr,
    upstream: Upstream,
    io: Arc<IoCounts>,
    /// Held by the connection and by a tunnel it hands over to.
    permit: Arc<OwnedSemaphorePermit>,
    /// The flow of the requests so far: a new one starts when the upstream changes.
    current: tokio::sync::Mutex<Option<ConnFlow>>,
    closed_by: Mutex<Option<String>>,
}

struct ConnFlow {
    open: OpenFlow,
    interest: Interest,
    /// The upstream address as a URI authority, for the requests of this flow.
    authority: Authority,
    base: tapline_core::FlowStats,
}

/// Where one request goes.
struct Target {
    host: String,
    port: u16,
    /// The mapping's `host:port`; `None` on the forward proxy, whose URLs are absolute.
    fixed: Option<HeaderValue>,
}

impl Target {
    /// The request's absolute URL (for the messages plugins and outputs see).
    fn url(&self, uri: &Uri) -> String {
        let (authority, path) = match &self.fixed {
            Some(a) => (
                a.to_str().unwrap_or_default(),
                uri.path_and_query().map_or("", |p| p.as_str()),
            ),
            None => (
                uri.authority().map_or("", |a| a.as_str()),
                uri.path_and_query().map_or("", |p| p.as_str()),
            ),
        };
        let path = if path.is_empty() { "/" } else { path };
        let mut url = String::with_capacity(7 + authority.len() + path.len());
        url.push_str("http://");
        url.push_str(authority);
        url.push_str(path);
        url
    }
}

impl HttpConn {
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ClosedByPlugin> {
        if req.method() == Method::CONNECT {
            return Ok(match self.upstream {
                Upstream::Forward => {
                    crate::connect::handle(&self.ctx, self.peer, self.permit.clone(), req).await
                }
                Upstream::Fixed { .. } => refuse(405, "CONNECT is served by the forward proxy"),
            });
        }
        let target = match self.target(&mut req) {
            Ok(t) => t,
            Err((status, why)) => return Ok(refuse(status, why)),
        };
        let (addr, unreachable) = match self.ctx.http_upstream(&target.host, target.port).await {
            Ok(addr) => (addr, None),
            Err(e @ UpstreamError::Loop(_)) => return Ok(response_from(&e.response())),
            // The request hooks still run, so a plugin can answer for a name that does not
            // resolve (a mocked API); without an answer the client gets the 502/504.
            Err(e) => (SocketAddr::from(([0, 0, 0, 0], target.port)), Some(e)),
        };
        let (flow, interest, authority) = self.flow_for(addr).await;
        let result = Exchange {
            ctx: &self.ctx,
            flow: &flow,
            interest,
            authority,
        }
        .run(req, target, addr, unreachable)
        .await;
        if let Err(ClosedByPlugin(reason)) = &result {
            if let Ok(mut closed) = self.closed_by.lock() {
                *closed = Some(reason.clone());
            }
        }
        result
    }

    /// The request's upstream and absolute URL; a status and reason for requests a forward
    /// proxy cannot serve.
    fn target(&self, req: &mut Request<Incoming>) -> Result<Target, (u16, &'static str)> {
        match &self.upstream {
            Upstream::Fixed {
                host,
                port,
                authority,
            } => {
                req.headers_mut()
                    .insert(http::header::HOST, authority.clone());
                Ok(Target {
                    host: host.to_string(),
                    port: *port,
                    fixed: Some(authority.clone()),
                })
            }
            Upstream::Forward => {
                let uri = req.uri();
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
                    fixed: None,
                })
            }
        }
    }

    /// The flow for requests to `addr`: the current one, or a new one when the upstream
    /// changed (the old one ends).
    async fn flow_for(&self, addr: SocketAddr) -> (Arc<Flow>, Interest, Authority) {
        let mut current = self.current.lock().await;
        if let Some(cf) = current.as_ref() {
            if cf.open.flow().server == addr {
                return (cf.open.flow().clone(), cf.interest, cf.authority.clone());
            }
        }
        if let Some(old) = current.take() {
            let stats = since(self.io.snapshot(), old.base);
            old.open.end(&self.ctx.pipeline, stats, FlowEnd::Fin).await;
        }
        let route = match self.upstream {
            Upstream::Forward => Route::Forward,
            Upstream::Fixed { .. } => Route::Mapping,
        };
        let base = self.io.snapshot();
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
        let authority: Authority = addr
            .to_string()
            .parse()
            .expect("a socket address is a valid URI authority");
        *current = Some(ConnFlow {
            open,
            interest,
            authority: authority.clone(),
            base,
        });
        (flow, interest, authority)
    }

    /// The connection closed: the open flow ends.
    async fn finish(&self, end: FlowEnd) {
        let Some(cf) = self.current.lock().await.take() else {
            return;
        };
        let plugin = self.closed_by.lock().ok().and_then(|mut c| c.take());
        let end = match plugin {
            Some(reason) => FlowEnd::ClosedByPlugin(reason),
            None => end,
        };
        let stats = since(self.io.snapshot(), cf.base);
        cf.open.end(&self.ctx.pipeline, stats, end).await;
    }
}

/// One request and its response on a flow.
struct Exchange<'a> {
    ctx: &'a Shared,
    flow: &'a Arc<Flow>,
    interest: Interest,
    /// The upstream's address as the authority of upstream request URIs.
    authority: Authority,
}

impl Exchange<'_> {
    async fn run(
        &self,
        req: Request<Incoming>,
        target: Target,
        addr: SocketAddr,
        unreachable: Option<UpstreamError>,
    ) -> Result<Response<ProxyBody>, ClosedByPlugin> {
        let started = Timestamp::now();
        let (mut parts, incoming) = req.into_parts();
        // The messages' details (ordered headers, URL, …) are built only for a reader: a stage
        // with HTTP hooks or a sink that reads them; otherwise the events carry none.
        let details = self.interest.http || self.ctx.http_details;
        let mut view = if details {
            request_view(&parts, target.url(&parts.uri))
        } else {
            HttpRequest::default()
        };
        let mut outgoing = body::boxed(incoming);
        if self.interest.http {
            let buffered = match body::buffer(outgoing, self.ctx.limits.body_limit).await {
                Ok(b) => b,
                Err(e) => return Ok(refuse(400, &format!("cannot read the request body: {e}"))),
            };
            view.body = buffered.seen.clone();
            view.body_truncated = buffered.truncated;
            if !buffered.truncated {
                view.body_len = view.body.len() as u64;
            }
            let before = view.clone();
            match self.ctx.pipeline.request(self.flow, &mut view).await {
                RequestVerdict::Continue => {}
                RequestVerdict::Respond(resp) => {
                    return Ok(self.answer(view, resp, started, None));
                }
                RequestVerdict::Close(reason) => return Err(ClosedByPlugin(reason)),
            }
            outgoing = apply_request_edits(&mut parts, &before, &mut view, buffered);
        }
        if let Some(e) = unreachable {
            tracing::debug!("{}", e.message());
            return Ok(self.answer(view, e.response(), started, None));
        }
        hop_by_hop::strip(&mut parts.headers);
        parts.version = Version::HTTP_11;
        let path = if details {
            view.path.as_str()
        } else {
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        };
        parts.uri = upstream_uri(&parts.uri, path);
        if !parts.headers.contains_key(HOST) {
            if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
        let sent_bytes = Arc::new(AtomicU64::new(0));
        let upstream_req = Request::from_parts(parts, Counted::new(outgoing, sent_bytes.clone()));

        let sent = Instant::now();
        let idle = self.ctx.limits.idle_timeout;
        let connect = || self.ctx.connect_addr(addr);
        let sending = self.ctx.pool.send(addr, upstream_req, connect);
        let answer = match tokio::time::timeout(idle, sending).await {
            Err(_) => Err(UpstreamError::Timeout(format!(
                "{addr} sent no response within {}",
                humane(idle)
            ))),
            Ok(answer) => answer,
        };
        let latency = sent.elapsed();
        view.body_len = view.body_len.max(sent_bytes.load(Ordering::Relaxed));
        let (resp, conn) = match answer {
            Ok(answered) => answered,
            Err(e) => {
                tracing::debug!("{addr}: {}", e.message());
                return Ok(self.answer(view, e.response(), started, Some(latency)));
            }
        };
        let head_ts = Timestamp::now();

        let (mut rparts, rincoming) = resp.into_parts();
        hop_by_hop::strip(&mut rparts.headers);
        let mut rview = if details {
            response_view(&rparts)
        } else {
            HttpResponse::default()
        };
        if details {
            rview.request = Some(view.line());
        }
        rview.latency = Some(latency);
        let mut rbody = body::boxed(rincoming);
        if self.interest.http {
            let buffered = match body::buffer(rbody, self.ctx.limits.body_limit).await {
                Ok(b) => b,
                Err(e) => {
                    let e = UpstreamError::Unreachable(format!("{addr} broke off: {e}"));
                    return Ok(self.answer(view, e.response(), started, Some(latency)));
                }
            };
            rview.body = buffered.seen.clone();
            rview.body_truncated = buffered.truncated;
            if !buffered.truncated {
                rview.body_len = rview.body.len() as u64;
            }
            let before = rview.clone();
            match self.ctx.pipeline.response(self.flow, &mut rview).await {
                ResponseVerdict::Continue => {
                    rbody = apply_response_edits(&mut rparts, &before, &rview, buffered);
                }
                ResponseVerdict::Replace(new) => {
                    return Ok(self.answer(view, new, started, Some(latency)));
                }
                ResponseVerdict::Close(reason) => return Err(ClosedByPlugin(reason)),
            }
        }
        let received = Arc::new(AtomicU64::new(0));
        let report = Report {
            pipeline: self.ctx.pipeline.clone(),
            flow: self.flow.clone(),
            request: view,
            request_ts: started,
            sent_bytes,
            response: rview,
            response_ts: head_ts,
            received: received.clone(),
        };
        let pool = self.ctx.pool.clone();
        let counted = Counted::new(rbody, received).on_end(move |whole| {
            report.emit();
            // Read to the end, the connection can carry the next request.
            if whole {
                pool.put_back(conn);
            }
        });
        Ok(Response::from_parts(rparts, body::boxed(counted)))
    }

    /// Answers the client with `resp` (from a plugin, or the proxy's own error) and reports
    /// the exchange at once.
    fn answer(
        &self,
        request: HttpRequest,
        mut resp: HttpResponse,
        started: Timestamp,
        latency: Option<Duration>,
    ) -> Response<ProxyBody> {
        resp.request = Some(request.line());
        resp.latency = Some(latency.unwrap_or_else(|| Timestamp::now().since(started)));
        resp.body_len = resp.body.len() as u64;
        let out = response_from(&resp);
        let report = Report {
            pipeline: self.ctx.pipeline.clone(),
            flow: self.flow.clone(),
            sent_bytes: Arc::new(AtomicU64::new(request.body_len)),
            request,
            request_ts: started,
            received: Arc::new(AtomicU64::new(resp.body_len)),
            response: resp,
            response_ts: Timestamp::now(),
        };
        report.emit();
        out
    }
}

/// The events of one exchange, sent to the outputs once the response body is done.
struct Report {
    pipeline: Pipeline,
    flow: Arc<Flow>,
    request: HttpRequest,
    request_ts: Timestamp,
    sent_bytes: Arc<AtomicU64>,
    response: HttpResponse,
    response_ts: Timestamp,
    received: Arc<AtomicU64>,
}

impl Report {
    fn emit(mut self) {
        self.request.body_len = self
            .request
            .body_len
            .max(self.sent_bytes.load(Ordering::Relaxed));
        self.response.body_len = self
            .response
            .body_len
            .max(self.received.load(Ordering::Relaxed));
        let latency = self.response.latency.unwrap_or_default();
        let events = [
            (
                self.request_ts,
                EventKind::HttpRequest(self.request.clone()),
            ),
            (
                self.response_ts,
                EventKind::HttpResponse(self.response.clone()),
            ),
            (
                self.response_ts,
                EventKind::Transaction(Transaction::Http {
                    request: Box::new(self.request),
                    response: Box::new(self.response),
                    latency,
                }),
            ),
        ];
        for (ts, kind) in events {
            self.pipeline.emit(&Event::on_flow(&self.flow, ts, kind));
        }
    }
}

/// Applies a plugin's request edits to the head; returns the body to forward. A changed
/// body replaces the whole original body and is framed by `Content-Length`.
fn apply_request_edits(
    parts: &mut http::request::Parts,
    before: &HttpRequest,
    after: &mut HttpRequest,
    buffered: Buffered,
) -> ProxyBody {
    if after.method != before.method {
        match Method::from_bytes(after.method.as_bytes()) {
            Ok(m) => parts.method = m,
            Err(_) => {
                tracing::warn!("ignoring invalid method {:?} set by a plugin", after.method);
                after.method = before.method.clone();
            }
        }
    }
    if after.path != before.path && after.path.parse::<PathAndQuery>().is_err() {
        tracing::warn!("ignoring invalid path {:?} set by a plugin", after.path);
        after.path = before.path.clone();
    }
    if after.headers != before.headers {
        parts.headers = map_from_headers(&after.headers);
    }
    if after.body != before.body {
        set_content_length(&mut parts.headers, after.body.len());
        after.body_len = after.body.len() as u64;
        after.body_truncated = false;
        body::full(after.body.clone())
    } else {
        buffered.forward
    }
}

/// Applies a plugin's response edits to the head; returns the body to send.
fn apply_response_edits(
    parts: &mut http::response::Parts,
    before: &HttpResponse,
    after: &HttpResponse,
    buffered: Buffered,
) -> ProxyBody {
    if after.status != before.status {
        match StatusCode::from_u16(after.status) {
            Ok(s) => parts.status = s,
            Err(_) => tracing::warn!("ignoring invalid status {} set by a plugin", after.status),
        }
    }
    if after.headers != before.headers {
        parts.headers = map_from_headers(&after.headers);
        hop_by_hop::strip(&mut parts.headers);
    }
    if after.body != before.body {
        set_content_length(&mut parts.headers, after.body.len());
        body::full(after.body.clone())
    } else {
        buffered.forward
    }
}

/// The origin-form URI sent upstream (the connection is to the resolved address; `Host`
/// keeps the name). The original path is reused unless a plugin changed it (a changed path
/// was checked valid).
fn upstream_uri(original: &Uri, path: &str) -> Uri {
    let unchanged = original
        .path_and_query()
        .filter(|pq| pq.as_str() == path)
        .cloned();
    let path_and_query = unchanged
        .or_else(|| path.parse::<PathAndQuery>().ok())
        .filter(|pq| pq.as_str().starts_with('/'))
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// A refusal the proxy answers with itself.
fn refuse(status: u16, text: &str) -> Response<ProxyBody> {
    response_from(&short_response(status, &format!("tapline: {text}")))
}

fn humane(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
