//! [`FaultStage`]: one fault as a pipeline stage.
//!
//! HTTP flows (forward proxy, HTTP mappings) are faulted per message in the request and
//! response hooks; byte flows (CONNECT tunnels, TCP and PostgreSQL mappings) per chunk. A
//! request is client-leg ingress and server-leg egress; a response is server-leg ingress and
//! client-leg egress (see [`Target`]). HTTP faults with an aim apply to the exchanges whose
//! `METHOD PATH` it matches; SQL faults to the PostgreSQL statements it matches (module
//! `sql`). Hooks delay by awaiting tokio timers, so the proxy's other flows go on meanwhile.
//! Faults apply in proxy mode only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tapline_core::{
    BoxFuture, Chunk, ChunkVerdict, Event, EventKind, Flow, FlowId, Headers, HookResult,
    HttpRequest, HttpResponse, Interest, Kind, KindSet, Message, MessageVerdict, Mode, Protocol,
    RequestVerdict, ResponseVerdict, Route, Side, Stage, StageCounters, Timestamp,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::bandwidth::{Rate, TokenBucket};
use crate::distribution::LatencyDistribution;
use crate::loss::{LossModel, Recovery};
use crate::spec::{FaultKind, FaultSpec};

mod sql;

/// What a fault remembers about one flow, dropped at its end.
#[derive(Default)]
struct FlowState {
    /// Per sender (client, server): the once-per-connection latency was drawn.
    latency_done: [bool; 2],
    /// The per-flow coin (bandwidth, byte blackhole), once tossed.
    selected: Option<bool>,
    /// Per sender: the bandwidth bucket.
    buckets: [Option<TokenBucket>; 2],
    /// Per sender: when jitter may apply again.
    next_jitter: [Option<Instant>; 2],
    /// Woken when the flow ends (HTTP blackholes wait on it).
    ended: Option<Arc<Notify>>,
    /// The exchange in progress is one the fault is aimed at (HTTP faults with an aim).
    aimed: bool,
}

fn index(from: Side) -> usize {
    match from {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// Where in an HTTP exchange a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Request,
    Response,
}

impl Point {
    fn sender(self) -> Side {
        match self {
            Point::Request => Side::Client,
            Point::Response => Side::Server,
        }
    }
}

/// What a fault decided for one chunk or message.
enum Action {
    Pass,
    Delay(Duration),
    /// Delay, then close the flow (TCP gave up retransmitting).
    Abort(Duration, String),
    /// Never forward: hold the bytes (chunk) or wait for the flow to end (HTTP).
    Blackhole,
    Respond(HttpResponse),
}

/// One fault as a pipeline stage.
pub struct FaultStage {
    spec: FaultSpec,
    run_start: Instant,
    rng: Mutex<SmallRng>,
    flows: Mutex<HashMap<FlowId, FlowState>>,
    counters: StageCounters,
}

impl FaultStage {
    /// A stage for `spec`; schedules count from `run_start`.
    pub fn new(spec: FaultSpec, run_start: Instant) -> Self {
        Self::with_rng(spec, run_start, SmallRng::from_os_rng())
    }

    /// A stage drawing from a seeded generator (reproducible tests).
    pub fn seeded(spec: FaultSpec, run_start: Instant, seed: u64) -> Self {
        Self::with_rng(spec, run_start, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(spec: FaultSpec, run_start: Instant, rng: SmallRng) -> Self {
        FaultStage {
            spec,
            run_start,
            rng: Mutex::new(rng),
            flows: Mutex::default(),
            counters: StageCounters::default(),
        }
    }

    /// What the fault is.
    pub fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    /// How many flows the fault currently keeps state for (they are dropped at flow end).
    pub fn tracked_flows(&self) -> usize {
        self.flows.lock().len()
    }

    fn active(&self) -> bool {
        self.spec
            .schedule
            .is_active(Instant::now().saturating_duration_since(self.run_start))
    }

    fn coin(&self) -> bool {
        let p = self.spec.probability;
        p >= 1.0 || (p > 0.0 && self.rng.lock().random_bool(p))
    }

    fn with_flow<T>(&self, id: FlowId, f: impl FnOnce(&mut FlowState) -> T) -> T {
        f(self.flows.lock().entry(id).or_default())
    }

    /// The per-flow coin, tossed on first use.
    fn flow_selected(&self, id: FlowId) -> bool {
        if let Some(selected) = self.with_flow(id, |s| s.selected) {
            return selected;
        }
        let toss = self.coin();
        self.with_flow(id, |s| *s.selected.get_or_insert(toss))
    }

    /// A delay from `distribution`, if the probability says so.
    fn draw(&self, distribution: &LatencyDistribution) -> Action {
        if self.coin() {
            Action::Delay(distribution.sample(&mut *self.rng.lock()))
        } else {
            Action::Pass
        }
    }

    /// Jitter for `from` on `id`, if the frequency allows one now.
    fn jitter(&self, id: FlowId, from: Side, amplitude: Duration, frequency: f64) -> Action {
        if frequency <= 0.0 {
            return Action::Pass;
        }
        let now = Instant::now();
        let due = self.with_flow(id, |s| {
            let next = &mut s.next_jitter[index(from)];
            if next.is_some_and(|t| now < t) {
                return false;
            }
            *next = Some(now + Duration::from_secs_f64(1.0 / frequency.max(1e-9)).min(DAY));
            true
        });
        if !due || !self.coin() {
            return Action::Pass;
        }
        let ms = self
            .rng
            .lock()
            .random_range(0.0..=amplitude.as_secs_f64() * 1000.0);
        Action::Delay(Duration::from_secs_f64(ms / 1000.0))
    }

    /// The wait for `len` bytes from `from` in `id`'s token bucket at `rate`.
    fn pace(&self, id: FlowId, from: Side, len: usize, rate: Rate) -> Action {
        if !self.flow_selected(id) {
            return Action::Pass;
        }
        let now = Instant::now();
        let wait = self.with_flow(id, |s| {
            s.buckets[index(from)]
                .get_or_insert_with(|| TokenBucket::new(rate, now))
                .take(len, now)
        });
        Action::Delay(wait)
    }

    /// The recovery delay of `len` bytes under `model`.
    fn lose(&self, len: usize, model: &LossModel) -> Action {
        match model.recover(len, &mut *self.rng.lock()) {
            Recovery::Delayed(d) if d.is_zero() => Action::Pass,
            Recovery::Delayed(d) => Action::Delay(d),
            Recovery::GaveUp(d) => Action::Abort(
                d,
                "packet loss: a segment was lost on every retransmission".into(),
            ),
        }
    }

    /// The decision for `len` bytes sent by `from` on a byte flow.
    fn decide_chunk(&self, flow: &Flow, from: Side, len: usize) -> Action {
        if !self.spec.target.selects(from) {
            return Action::Pass;
        }
        let id = flow.id;
        if let FaultKind::Blackhole = self.spec.kind {
            // A flow is swallowed for good when its first targeted bytes meet an active
            // blackhole: releasing it later would deliver a stream with a hole in it.
            let swallowed = match self.with_flow(id, |s| s.selected) {
                Some(decided) => decided,
                None => {
                    let toss = self.active() && self.coin();
                    self.with_flow(id, |s| *s.selected.get_or_insert(toss))
                }
            };
            return if swallowed {
                Action::Blackhole
            } else {
                Action::Pass
            };
        }
        if let FaultKind::Latency {
            per_read_write: false,
            ..
        } = self.spec.kind
        {
            let first = self.with_flow(id, |s| {
                !std::mem::replace(&mut s.latency_done[index(from)], true)
            });
            if !first {
                return Action::Pass;
            }
        }
        if !self.active() {
            return Action::Pass;
        }
        match &self.spec.kind {
            FaultKind::Latency { distribution, .. } => self.draw(distribution),
            FaultKind::Jitter {
                amplitude,
                frequency,
            } => self.jitter(id, from, *amplitude, *frequency),
            FaultKind::Bandwidth { rate } => self.pace(id, from, len, *rate),
            FaultKind::PacketLoss { model } => self.lose(len, model),
            FaultKind::Blackhole
            | FaultKind::HttpError { .. }
            | FaultKind::SqlError(_)
            | FaultKind::SqlLatency(_)
            | FaultKind::SqlReset => Action::Pass,
        }
    }

    /// Whether the fault is aimed at this request (`METHOD PATH`), remembered for its
    /// response.
    fn aimed_request(&self, flow: &Flow, request: &HttpRequest) -> bool {
        let Some(aim) = &self.spec.aim else {
            return true;
        };
        let hit = aim.hits(&format!("{} {}", request.method, request.path));
        self.with_flow(flow.id, |s| s.aimed = hit);
        hit
    }

    /// Whether the fault is aimed at the exchange this response answers.
    fn aimed_response(&self, flow: &Flow) -> bool {
        self.spec.aim.is_none() || self.with_flow(flow.id, |s| s.aimed)
    }

    /// The decision for an HTTP message at `point` of `len` bytes on the wire.
    fn decide_http(&self, flow: &Flow, point: Point, len: usize) -> Action {
        if let FaultKind::HttpError { status, body } = &self.spec.kind {
            return if point == Point::Request && self.active() && self.coin() {
                let headers: Headers = [("Content-Type", "text/plain; charset=utf-8")]
                    .into_iter()
                    .collect();
                Action::Respond(HttpResponse::new(*status, headers, body.clone()))
            } else {
                Action::Pass
            };
        }
        let target = self.spec.target;
        let selected = match point {
            Point::Request => target.selects_request(),
            Point::Response => target.selects_response(),
        };
        if !selected || !self.active() {
            return Action::Pass;
        }
        // Faults applied once per exchange apply at its first targeted point.
        let first_point = point == Point::Request || !target.selects_request();
        let id = flow.id;
        let from = point.sender();
        match &self.spec.kind {
            FaultKind::Latency {
                distribution,
                per_read_write,
            } if *per_read_write || first_point => self.draw(distribution),
            FaultKind::Jitter {
                amplitude,
                frequency,
            } => self.jitter(id, from, *amplitude, *frequency),
            FaultKind::Bandwidth { rate } => self.pace(id, from, len, *rate),
            FaultKind::PacketLoss { model } => self.lose(len, model),
            FaultKind::Blackhole if first_point && self.coin() => Action::Blackhole,
            _ => Action::Pass,
        }
    }

    /// Waits until `id` ends (or forever, if the proxy drops this future first).
    async fn until_flow_ends(&self, id: FlowId) {
        let ended = self.with_flow(id, |s| s.ended.get_or_insert_with(Default::default).clone());
        ended.notified().await;
    }
}

/// Upper bound on the interval between jitters (frequencies near zero).
const DAY: Duration = Duration::from_secs(86_400);

/// True for flows whose requests go through the HTTP hooks: the forward proxy's, and an
/// `http` mapping's or intercepted tunnel's (HTTPS, decrypted).
fn is_http(flow: &Flow) -> bool {
    flow.route == Route::Forward
        || (matches!(flow.route, Route::Mapping | Route::Tunnel) && flow.protocol == Protocol::Http)
}

/// Bytes of a request on the wire: request line, header fields, body.
fn request_len(r: &HttpRequest) -> usize {
    r.method.len()
        + r.path.len()
        + r.version.len()
        + 4
        + headers_len(&r.headers)
        + body_len(&r.headers, r.body.len(), r.body_len)
}

/// Bytes of a response on the wire: status line, header fields, body.
fn response_len(r: &HttpResponse) -> usize {
    r.version.len()
        + r.reason.len()
        + 9
        + headers_len(&r.headers)
        + body_len(&r.headers, r.body.len(), r.body_len)
}

fn headers_len(h: &Headers) -> usize {
    h.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>() + 2
}

/// The body's full length: the largest of what was kept, what the proxy counted, and the
/// `Content-Length` (a body over the proxy's body limit is only partly kept).
fn body_len(headers: &Headers, kept: usize, counted: u64) -> usize {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    kept.max(usize::try_from(counted.max(declared)).unwrap_or(usize::MAX))
}

impl Stage for FaultStage {
    fn name(&self) -> &str {
        self.spec.kind.name()
    }

    fn family(&self) -> &'static str {
        "fault"
    }

    fn interest(&self, flow: &Flow) -> Interest {
        if flow.mode != Mode::Proxy {
            return Interest::default();
        }
        if self.spec.kind.is_sql() {
            return Interest {
                messages: flow.protocol == Protocol::Postgres,
                ..Interest::default()
            };
        }
        let http = is_http(flow);
        let http_error = matches!(self.spec.kind, FaultKind::HttpError { .. });
        if !http && http_error {
            return Interest::default();
        }
        Interest {
            chunks: !http,
            requests: http,
            responses: http,
            messages: false,
            packets: false,
            // Flow state is dropped at the flow's end.
            observe: KindSet::of(&[Kind::FlowEnd]),
        }
    }

    fn counters(&self) -> &StageCounters {
        &self.counters
    }

    fn wants_message(&self, from: Side, type_name: &str) -> bool {
        sql::judges(from, type_name)
    }

    fn on_event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, HookResult<()>> {
        if let (EventKind::FlowEnd { .. }, Some(flow)) = (&event.kind, &event.flow) {
            if let Some(state) = self.flows.lock().remove(&flow.id) {
                if let Some(ended) = state.ended {
                    ended.notify_waiters();
                    ended.notify_one();
                }
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn on_message<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        _ts: Timestamp,
        message: &'a mut Message,
    ) -> BoxFuture<'a, HookResult<MessageVerdict>> {
        let action = self.decide_message(flow, message);
        Box::pin(async move {
            Ok(match action {
                sql::SqlAction::Pass => MessageVerdict::Continue,
                sql::SqlAction::Delay(d) => {
                    tokio::time::sleep(d).await;
                    MessageVerdict::Continue
                }
                sql::SqlAction::Fail(error) => MessageVerdict::PgError(error),
                sql::SqlAction::Reset => MessageVerdict::Close(
                    "sql-reset: the connection was closed at a matching statement".into(),
                ),
            })
        })
    }

    fn on_chunk<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        chunk: &'a Chunk,
    ) -> BoxFuture<'a, HookResult<ChunkVerdict>> {
        let action = self.decide_chunk(flow, chunk.from, chunk.data.len());
        Box::pin(async move {
            Ok(match action {
                Action::Pass | Action::Respond(_) => ChunkVerdict::Pass,
                Action::Delay(d) => {
                    tokio::time::sleep(d).await;
                    ChunkVerdict::Pass
                }
                Action::Abort(d, reason) => {
                    tokio::time::sleep(d).await;
                    ChunkVerdict::Close(reason)
                }
                Action::Blackhole => ChunkVerdict::Hold,
            })
        })
    }

    fn on_request<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, HookResult<RequestVerdict>> {
        let action = match self.aimed_request(flow, request) {
            true => self.decide_http(flow, Point::Request, request_len(request)),
            false => Action::Pass,
        };
        Box::pin(async move {
            Ok(match action {
                Action::Pass => RequestVerdict::Continue,
                Action::Delay(d) => {
                    tokio::time::sleep(d).await;
                    RequestVerdict::Continue
                }
                Action::Abort(d, reason) => {
                    tokio::time::sleep(d).await;
                    RequestVerdict::Close(reason)
                }
                Action::Blackhole => {
                    self.until_flow_ends(flow.id).await;
                    RequestVerdict::Close("blackhole".into())
                }
                Action::Respond(response) => RequestVerdict::Respond(response),
            })
        })
    }

    fn on_response<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        response: &'a mut HttpResponse,
    ) -> BoxFuture<'a, HookResult<ResponseVerdict>> {
        let action = match self.aimed_response(flow) {
            true => self.decide_http(flow, Point::Response, response_len(response)),
            false => Action::Pass,
        };
        Box::pin(async move {
            Ok(match action {
                Action::Pass | Action::Respond(_) => ResponseVerdict::Continue,
                Action::Delay(d) => {
                    tokio::time::sleep(d).await;
                    ResponseVerdict::Continue
                }
                Action::Abort(d, reason) => {
                    tokio::time::sleep(d).await;
                    ResponseVerdict::Close(reason)
                }
                Action::Blackhole => {
                    self.until_flow_ends(flow.id).await;
                    ResponseVerdict::Close("blackhole".into())
                }
            })
        })
    }
}
