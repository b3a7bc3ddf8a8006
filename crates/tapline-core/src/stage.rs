//! The [`Stage`] trait: one plugin or built-in step of the pipeline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::counters::StageCounters;
use crate::event::{Chunk, Event, Message};
use crate::flow::{Flow, Side};
use crate::http::{HttpRequest, HttpResponse};
use crate::kind::{Kind, KindSet};
use crate::time::Timestamp;
use crate::verdict::{ChunkVerdict, MessageVerdict, RequestVerdict, ResponseVerdict};

/// A boxed, sendable future, as stage hooks return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which events a stage wants for a given flow, so the dispatch can skip work (no chunk
/// dispatch on a flow no stage reads, no packet events when no stage wants them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// `chunk` events (raw stream bytes).
    pub chunks: bool,
    /// `http_request` events (the proxy buffers request bodies for them).
    pub requests: bool,
    /// `http_response` events (the proxy buffers response bodies for them).
    pub responses: bool,
    /// `message` events, with verdicts (the proxy frames a `psql` mapping's messages before
    /// forwarding them).
    pub messages: bool,
    /// `packet` events (capture only).
    pub packets: bool,
    /// The observe-only events wanted (flow start/end, gaps, transactions).
    pub observe: KindSet,
}

impl Interest {
    /// Every event.
    pub const ALL: Interest = Interest {
        chunks: true,
        requests: true,
        responses: true,
        messages: true,
        packets: true,
        observe: KindSet::ALL,
    };

    /// Requests or responses: the HTTP messages are read.
    pub fn http(self) -> bool {
        self.requests || self.responses
    }

    /// True when nothing is wanted.
    pub fn is_empty(self) -> bool {
        self == Interest::default()
    }

    /// Whether an event of `kind` goes to the stage's hooks.
    pub fn wants(self, kind: Kind) -> bool {
        match kind {
            Kind::Chunk => self.chunks,
            Kind::HttpRequest => self.requests,
            Kind::HttpResponse => self.responses,
            Kind::Message => self.messages,
            Kind::Packet => self.packets,
            other => self.observe.contains(other),
        }
    }

    /// The union of two interests.
    #[must_use]
    pub fn union(self, other: Interest) -> Interest {
        Interest {
            chunks: self.chunks || other.chunks,
            requests: self.requests || other.requests,
            responses: self.responses || other.responses,
            messages: self.messages || other.messages,
            packets: self.packets || other.packets,
            observe: self.observe.union(other.observe),
        }
    }
}

/// The hook a call was made to, named as Lua plugins name them (for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `on_flow_start`.
    FlowStart,
    /// `on_flow_end`.
    FlowEnd,
    /// `on_packet`.
    Packet,
    /// `on_data`.
    Data,
    /// `on_gap`.
    Gap,
    /// `on_request`.
    Request,
    /// `on_response`.
    Response,
    /// `on_message`.
    Message,
    /// `on_transaction`.
    Transaction,
    /// `on_stop`.
    Stop,
}

impl Hook {
    /// The hook events of `kind` go to; records and alerts go to none.
    pub fn for_kind(kind: Kind) -> Option<Hook> {
        Some(match kind {
            Kind::FlowStart => Hook::FlowStart,
            Kind::FlowEnd => Hook::FlowEnd,
            Kind::Packet => Hook::Packet,
            Kind::Chunk => Hook::Data,
            Kind::Gap => Hook::Gap,
            Kind::HttpRequest => Hook::Request,
            Kind::HttpResponse => Hook::Response,
            Kind::Message => Hook::Message,
            Kind::Transaction => Hook::Transaction,
            Kind::Record | Kind::Alert => return None,
        })
    }

    /// The hook's name (`on_request`, …).
    pub fn name(self) -> &'static str {
        match self {
            Hook::FlowStart => "on_flow_start",
            Hook::FlowEnd => "on_flow_end",
            Hook::Packet => "on_packet",
            Hook::Data => "on_data",
            Hook::Gap => "on_gap",
            Hook::Request => "on_request",
            Hook::Response => "on_response",
            Hook::Message => "on_message",
            Hook::Transaction => "on_transaction",
            Hook::Stop => "on_stop",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hook call that went wrong (a Lua error, a time budget passed, a gRPC call that failed
/// or answered nonsense), in the stage's own words. The dispatch counts it, logs it with a
/// rate limit and applies the failure policy; the event goes on as if the stage had passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    /// What went wrong (one line; Lua errors start with `file:line`).
    pub message: String,
    /// True when the call ran out of time.
    pub timed_out: bool,
}

impl HookFailure {
    /// A failure that is not a time-out.
    pub fn new(message: impl Into<String>) -> HookFailure {
        HookFailure {
            message: message.into(),
            timed_out: false,
        }
    }
}

/// What a hook answers: its verdict, or why it has none.
pub type HookResult<T> = Result<T, HookFailure>;

/// What a stage is told about the run it belongs to.
#[derive(Clone)]
pub struct StageContext {
    /// Where the stage's records and alerts go.
    pub sink: Arc<dyn crate::sink::EventSink>,
}

/// One step of the pipeline: a Lua plugin, a gRPC plugin, a fault. Every hook has a default
/// that passes the event on untouched, so a stage implements only what it needs.
///
/// Hooks are called by the [`Dispatch`](crate::Dispatch) in pipeline order; what a stage
/// changes is what the next one sees. Events of one flow reach a stage in order. A stage does
/// not count, time or log its calls, nor decide what a failure does to the flow: it answers
/// with a verdict or a [`HookFailure`], and the dispatch does the rest for every stage alike.
pub trait Stage: Send + Sync {
    /// The stage's name, for logs and stats.
    fn name(&self) -> &str;

    /// What the stage is, for logs: `lua`, `gRPC`, `fault`.
    fn family(&self) -> &'static str;

    /// The events this stage wants for `flow`.
    fn interest(&self, flow: &Flow) -> Interest;

    /// Whether the stage wants a decoded message of this type from `from`, among the flows
    /// whose interest has `messages` (the proxy builds and judges only the messages some
    /// stage wants). All of them unless the stage says otherwise.
    fn wants_message(&self, _from: Side, _type_name: &str) -> bool {
        true
    }

    /// Whether the stage wants packets that belong to no flow (ARP, ICMP, non-IP).
    fn wants_packets(&self) -> bool {
        false
    }

    /// The stage's counters (calls, errors, ignored verdicts), kept by the dispatch.
    fn counters(&self) -> &StageCounters;

    /// Counts of the stage's own, named for the end-of-run stats after the common ones
    /// (a Lua plugin's reloads and failed reloads); none by default.
    fn own_counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Observe-only events: flow start/end, packets, gaps, transactions.
    fn on_event<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, HookResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Raw stream bytes from one side of `flow`.
    fn on_chunk<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _chunk: &'a Chunk,
    ) -> BoxFuture<'a, HookResult<ChunkVerdict>> {
        Box::pin(async { Ok(ChunkVerdict::Pass) })
    }

    /// An HTTP request; edits made in place are applied (proxy mode). A stage that fails
    /// leaves the request as it found it.
    fn on_request<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, HookResult<RequestVerdict>> {
        Box::pin(async { Ok(RequestVerdict::Continue) })
    }

    /// An HTTP response; edits made in place are applied (proxy mode). A stage that fails
    /// leaves the response as it found it.
    fn on_response<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _response: &'a mut HttpResponse,
    ) -> BoxFuture<'a, HookResult<ResponseVerdict>> {
        Box::pin(async { Ok(ResponseVerdict::Continue) })
    }

    /// A decoded message (PostgreSQL) seen at `ts`; edits made in place to its `fields` are applied
    /// where the proxy frames messages (`psql` mappings). A stage that fails leaves the
    /// message as it found it.
    fn on_message<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _ts: Timestamp,
        _message: &'a mut Message,
    ) -> BoxFuture<'a, HookResult<MessageVerdict>> {
        Box::pin(async { Ok(MessageVerdict::Continue) })
    }

    /// The run is stopping: last chance to emit records, before outputs are flushed.
    fn on_stop(&self) -> BoxFuture<'_, HookResult<()>> {
        Box::pin(async { Ok(()) })
    }
}
