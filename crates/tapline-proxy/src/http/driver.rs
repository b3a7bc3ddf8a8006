//! The one I/O loop of a client connection's HTTP exchanges: it asks the [`Exchange`]
//! machine what it needs and does it — reads and writes both connections (concurrently:
//! a request body uploads while the response head is awaited), keeps the timeouts, routes
//! requests and opens their flows, calls the hooks through the flow's [`Dispatch`], gets
//! upstream connections, and reports finished exchanges. Generic over the client's and the
//! upstream's byte streams.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tapline_core::{
    Dispatch, EventKind, FlowEnd, FlowStats, Kind, Protocol, Route, Timestamp, TlsInfo, Transaction,
};

use super::exchange::{Bounds, Exchange, Report, Routed, Step, Timer, Wait};
use super::io::{Happened, Sides};
use super::target::Upstream;
use super::upstream::{Pooled, Upstreams};
use crate::conn::Conn;
use crate::context::Shared;
use crate::errors::UpstreamError;
use crate::flows::OpenFlow;
use crate::stop::Phase;

/// How serving a client connection ended.
pub(crate) enum Ending<C, U> {
    /// The connection is done.
    Closed,
    /// The client asked for a tunnel to `target`; `early` is what it sent after its head.
    Tunnel {
        client: C,
        target: String,
        early: Bytes,
    },
    /// The upstream switched protocols: the flow relays raw bytes from now on. The buffers
    /// hold what each side sent right after the switch.
    Switched {
        client: C,
        upstream: U,
        client_in: Bytes,
        upstream_in: Bytes,
        flow: OpenFlow,
        dispatch: Dispatch,
        totals: FlowStats,
    },
}

/// The flow of the requests so far (a new one starts when the upstream address changes).
struct ConnFlow {
    open: OpenFlow,
    dispatch: Dispatch,
    /// The same flow with verdicts observed only, for `on_data` of the upstream leg's bytes
    /// (an HTTP exchange's bytes are reported as its messages, never replaced).
    observer: Option<Dispatch>,
    /// Someone reads the exchanges' details (the request and response are built).
    details: bool,
    /// Someone reads transactions' heads (else they carry the request line and status).
    transaction_heads: bool,
    /// An output shows bodies (streamed ones are copied for it).
    copy_bodies: bool,
    /// The connection's totals when the flow started.
    base: FlowStats,
}

/// One client connection being served.
pub(crate) struct Driver<C, U: Upstreams> {
    ctx: Arc<Shared>,
    upstreams: Arc<U>,
    peer: SocketAddr,
    upstream: Upstream,
    sides: Sides<C, U::Stream>,
    /// The address the current exchange goes to.
    addr: SocketAddr,
    machine: Exchange,
    flow: Option<ConnFlow>,
    /// The connection's totals the last time it was between requests: where a flow that
    /// starts with the next request begins (its head was read before its upstream was known).
    between: FlowStats,
    /// The client connection's TLS, when tapline terminated it.
    tls: Option<Arc<TlsInfo>>,
    /// Why the upstream's TLS handshake failed: the client got a 502, and the connection
    /// ends as an error once it was written.
    failed: Option<String>,
}

impl<C, U> Driver<C, U>
where
    C: Conn,
    U: Upstreams,
{
    /// A driver for the client connection `client` from `peer` (TLS described by `tls`),
    /// whose first bytes `early` were already read.
    pub(crate) fn new(
        ctx: Arc<Shared>,
        upstreams: Arc<U>,
        client: C,
        peer: SocketAddr,
        upstream: Upstream,
        tls: Option<Arc<TlsInfo>>,
        early: Bytes,
    ) -> Self {
        let bounds = Bounds {
            max_head: ctx.limits.max_header_size,
            body_limit: ctx.limits.body_limit,
        };
        let mut machine = Exchange::new(bounds, !upstream.is_forward());
        let mut sides = Sides::new(client, ctx.stop.clone());
        if !early.is_empty() {
            machine.client_in.extend_from_slice(&early);
            sides.already_read(early.len());
        }
        Driver {
            machine,
            sides,
            ctx,
            upstreams,
            peer,
            upstream,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            flow: None,
            between: FlowStats::default(),
            tls,
            failed: None,
        }
    }

    /// Serves exchanges until the connection closes, becomes a tunnel or switches
    /// protocols. Flows end here, except a switched one (its relay ends it).
    pub(crate) async fn run(&mut self) -> Option<Step> {
        loop {
            self.machine.set_draining(self.ctx.stop.is(Phase::Draining));
            let step = self.machine.step(Timestamp::now());
            match step {
                Step::Read(wait) if wait.client == Some(Timer::Idle) => {
                    self.between = self.sides.totals()
                }
                Step::Read(wait) if wait.client == Some(Timer::Head) => {}
                _ => self.sides.head_done(),
            }
            match step {
                Step::Read(wait) => self.wait(wait).await,
                Step::Route => self.route().await,
                Step::RequestHooks => {
                    let dispatch = self.dispatch();
                    let verdict = match self.machine.request_mut() {
                        Some(request) => dispatch.request(request).await,
                        None => continue,
                    };
                    self.machine.request_verdict(verdict, Timestamp::now());
                }
                Step::Connect { fresh } => self.connect(fresh).await,
                Step::ResponseHooks => {
                    let dispatch = self.dispatch();
                    let verdict = match self.machine.response_mut() {
                        Some(response) => dispatch.response(response).await,
                        None => continue,
                    };
                    self.machine.response_verdict(verdict, Timestamp::now());
                }
                Step::Done => {
                    self.done().await;
                    if let Some(why) = self.failed.take() {
                        self.sides.close(&mut self.machine).await;
                        self.finish(FlowEnd::Error(why)).await;
                        return None;
                    }
                }
                step @ (Step::Tunnel(_) | Step::Switch) => {
                    self.sides.flush(&mut self.machine).await;
                    return Some(step);
                }
                Step::Close(end) => {
                    self.sides.close(&mut self.machine).await;
                    self.finish(end).await;
                    return None;
                }
            }
        }
    }

    /// What the driver ended with, once [`Driver::run`] returned `step`.
    pub(crate) async fn ending(mut self, step: Step) -> Ending<C, U::Stream> {
        match step {
            Step::Tunnel(target) => {
                self.finish(FlowEnd::Fin).await;
                let early = self.machine.client_in.split().freeze();
                Ending::Tunnel {
                    client: self.sides.client,
                    target,
                    early,
                }
            }
            Step::Switch => {
                if let Some(report) = self.machine.take_report() {
                    self.report(report).await;
                }
                let totals = self.sides.totals();
                match (self.flow.take(), self.sides.upstream.take()) {
                    (Some(cf), Some((_, upstream))) => Ending::Switched {
                        client: self.sides.client,
                        upstream,
                        client_in: self.machine.client_in.split().freeze(),
                        upstream_in: self.machine.upstream_in.split().freeze(),
                        totals: since(totals, cf.base),
                        flow: cf.open,
                        dispatch: cf.dispatch,
                    },
                    (cf, _) => {
                        self.flow = cf;
                        self.finish(FlowEnd::Fin).await;
                        Ending::Closed
                    }
                }
            }
            _ => Ending::Closed,
        }
    }

    /// The run was forced to stop: an exchange whose response was still on its way is
    /// reported with the bytes that made it, and the flow ends as `shutdown`.
    pub(crate) async fn forced(&mut self) {
        if let Some(report) = self.machine.interrupted() {
            self.report(report).await;
        }
        self.finish(FlowEnd::Shutdown).await;
    }

    /// The current flow's dispatch.
    fn dispatch(&self) -> Dispatch {
        match &self.flow {
            Some(cf) => cf.dispatch.clone(),
            None => unreachable!("hooks run only for a routed request, which has a flow"),
        }
    }

    /// Where the request goes: its target, address and flow.
    async fn route(&mut self) {
        let Some(head) = self.machine.request_head() else {
            return;
        };
        let target = match self.upstream.target(head.target()) {
            Ok(t) => t,
            Err((status, why)) => {
                return self
                    .machine
                    .routed(Err((status, why.into())), Timestamp::now())
            }
        };
        let (addr, unreachable) = match self.upstreams.address(&target.host, target.port).await {
            Ok(addr) => (addr, None),
            Err(e @ UpstreamError::Loop(_)) => {
                return self
                    .machine
                    .routed(Err((508, e.message().to_string())), Timestamp::now())
            }
            Err(e) => (SocketAddr::from(([0, 0, 0, 0], target.port)), Some(e)),
        };
        self.addr = addr;
        let cf = self.flow_for(addr).await;
        let interest = cf.dispatch.interest();
        let routed = Routed {
            target,
            addr,
            hook_requests: interest.requests,
            hook_responses: interest.responses,
            details: cf.details,
            copy_bodies: cf.copy_bodies,
            unreachable,
        };
        self.machine.routed(Ok(routed), Timestamp::now());
    }

    /// The flow for requests to `addr`: the current one, or a new one when the upstream
    /// changed (the old one ends).
    async fn flow_for(&mut self, addr: SocketAddr) -> &ConnFlow {
        let same = self
            .flow
            .as_ref()
            .is_some_and(|cf| cf.open.flow().server == addr);
        if !same {
            if let Some(old) = self.flow.take() {
                let stats = since(self.between, old.base);
                old.open.end(&old.dispatch, stats, FlowEnd::Fin).await;
            }
            let route = match self.upstream {
                Upstream::Forward => Route::Forward,
                Upstream::Fixed { .. } => Route::Mapping,
                Upstream::Tunnel { .. } => Route::Tunnel,
            };
            let (open, dispatch) = OpenFlow::start(
                &self.ctx,
                Protocol::Http,
                route,
                self.peer,
                addr,
                self.tls.clone(),
            )
            .await;
            let interest = dispatch.interest();
            let sink = dispatch.pipeline().sink();
            let transaction_heads = interest.observe.contains(Kind::Transaction)
                || sink.wants_details(Kind::Transaction);
            let details = interest.http()
                || transaction_heads
                || [Kind::HttpRequest, Kind::HttpResponse]
                    .into_iter()
                    .any(|k| sink.wants_details(k));
            let copy_bodies = sink.wants_bodies();
            self.flow = Some(ConnFlow {
                observer: interest.chunks.then(|| dispatch.observing()),
                open,
                dispatch,
                details,
                transaction_heads,
                copy_bodies,
                base: self.between,
            });
        }
        self.flow.as_ref().expect("just made")
    }

    /// An upstream connection for the exchange.
    async fn connect(&mut self, fresh: bool) {
        self.sides.upstream = None;
        match self.upstreams.get(self.addr, fresh).await {
            Ok((conn, reused)) => {
                self.machine.upstream_in = conn.buf;
                self.sides.upstream = Some((self.addr, conn.stream));
                self.machine.connected(reused, Timestamp::now());
            }
            Err(e) => {
                if let UpstreamError::Handshake(why) = &e {
                    self.failed = Some(why.clone());
                }
                self.machine.connect_failed(e, Timestamp::now())
            }
        }
    }

    /// The exchange is over: its events go out, its upstream connection back to the pool
    /// when it can serve another request.
    async fn done(&mut self) {
        self.flush_upstream_output();
        if let Some(report) = self.machine.take_report() {
            self.report(report).await;
        }
        let reusable = self.machine.upstream_reusable();
        if let Some((addr, stream)) = self.sides.upstream.take() {
            if reusable {
                let buf = std::mem::take(&mut self.machine.upstream_in);
                self.upstreams.give_back(addr, Pooled { stream, buf });
            }
        }
        self.machine.upstream_in = BytesMut::new();
    }

    /// Nothing queued for an upstream outlives its exchange.
    fn flush_upstream_output(&mut self) {
        self.machine.upstream_output().clear();
    }

    /// Sends one exchange's events: the request, the response, and the transaction pairing
    /// them (its hooks fire as in capture mode).
    async fn report(&mut self, report: Report) {
        let Some((d, heads)) = self
            .flow
            .as_ref()
            .map(|cf| (cf.dispatch.clone(), cf.transaction_heads))
        else {
            return;
        };
        let Report {
            request,
            response,
            request_ts,
            response_ts,
        } = report;
        let latency = response.latency.unwrap_or_default();
        let (tx_request, tx_response) = if heads {
            (request.clone(), response.clone())
        } else {
            (request.line_only(), response.status_only())
        };
        let transaction = Transaction::Http {
            request: Box::new(tx_request),
            response: Box::new(tx_response),
            latency,
        };
        d.event(request_ts, EventKind::HttpRequest(request)).await;
        d.event(response_ts, EventKind::HttpResponse(response))
            .await;
        d.event(response_ts, EventKind::Transaction(transaction))
            .await;
    }

    /// The connection closed: the open flow ends.
    async fn finish(&mut self, end: FlowEnd) {
        if let Some(cf) = self.flow.take() {
            let stats = since(self.sides.totals(), cf.base);
            cf.open.end(&cf.dispatch, stats, end).await;
        }
    }

    /// Moves bytes until something happens that the machine must take in; then shows the
    /// upstream-leg bytes that went by to the `on_data` hooks that observe them.
    async fn wait(&mut self, wait: Wait) {
        let idle = self.ctx.limits.idle_timeout;
        let observer = self.flow.as_ref().and_then(|cf| cf.observer.clone());
        let happened = self
            .sides
            .wait(&mut self.machine, wait, idle, observer.is_some())
            .await;
        match happened {
            Happened::Progress => {}
            Happened::ClientEnd(None) | Happened::Drained => self.machine.client_eof(),
            Happened::ClientEnd(Some(e)) => self.machine.client_failed(e),
            Happened::UpstreamEnd(None) => self.machine.upstream_eof(),
            Happened::UpstreamEnd(Some(e)) => self.machine.upstream_failed(e),
            Happened::ClientQuiet => self.machine.timed_out(true, idle),
            Happened::UpstreamQuiet => self.machine.timed_out(false, idle),
        }
        if let Some(observer) = observer {
            for chunk in std::mem::take(&mut self.sides.seen) {
                observer.observe_chunk(&chunk).await;
            }
        }
    }
}

/// The totals between two snapshots.
pub(crate) fn since(now: FlowStats, base: FlowStats) -> FlowStats {
    FlowStats {
        bytes_from_client: now.bytes_from_client - base.bytes_from_client,
        bytes_from_server: now.bytes_from_server - base.bytes_from_server,
        packets_from_client: now.packets_from_client - base.packets_from_client,
        packets_from_server: now.packets_from_server - base.packets_from_server,
    }
}
