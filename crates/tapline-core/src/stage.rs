//! The [`Stage`] trait: one plugin or built-in step of the pipeline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::{Chunk, Event};
use crate::flow::Flow;
use crate::http::{HttpRequest, HttpResponse};
use crate::pipeline::StageCounters;
use crate::verdict::{ChunkVerdict, RequestVerdict, ResponseVerdict};

/// A boxed, sendable future, as stage hooks return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which events a stage wants for a given flow, so the pipeline can skip work (no chunk
/// dispatch on a flow no stage reads, no packet events when no stage wants them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// `chunk` events (raw stream bytes).
    pub chunks: bool,
    /// `http_request` events (the proxy buffers request bodies for them).
    pub requests: bool,
    /// `http_response` events (the proxy buffers response bodies for them).
    pub responses: bool,
    /// Observe-only events: flow start/end, messages, transactions, gaps.
    pub observe: bool,
    /// `packet` events (capture only).
    pub packets: bool,
}

impl Interest {
    /// Every event.
    pub const ALL: Interest = Interest {
        chunks: true,
        requests: true,
        responses: true,
        observe: true,
        packets: true,
    };

    /// Requests or responses: the HTTP messages are read.
    pub fn http(self) -> bool {
        self.requests || self.responses
    }

    /// The union of two interests.
    pub fn union(self, other: Interest) -> Interest {
        Interest {
            chunks: self.chunks || other.chunks,
            requests: self.requests || other.requests,
            responses: self.responses || other.responses,
            observe: self.observe || other.observe,
            packets: self.packets || other.packets,
        }
    }
}

/// What a stage is told about the run it belongs to.
#[derive(Clone)]
pub struct StageContext {
    /// Where the stage's records and alerts go.
    pub sink: Arc<dyn crate::sink::EventSink>,
}

/// One step of the pipeline: a Lua plugin, a gRPC plugin, a fault. Every hook has a default
/// that passes the event on untouched, so a stage implements only what it needs.
///
/// Hooks are called in pipeline order; what a stage changes is what the next one sees. Events
/// of one flow reach a stage in order. A stage never fails: it handles its own errors (log,
/// count, fail open or closed) and answers with a verdict.
pub trait Stage: Send + Sync {
    /// The stage's name, for logs and stats.
    fn name(&self) -> &str;

    /// The events this stage wants for `flow`.
    fn interest(&self, flow: &Flow) -> Interest;

    /// Whether the stage wants packets that belong to no flow (ARP, ICMP, non-IP).
    fn wants_packets(&self) -> bool {
        false
    }

    /// Counters the pipeline and the stage update (calls, errors, ignored verdicts).
    fn counters(&self) -> &StageCounters;

    /// Observe-only events: flow start/end, packets, messages, transactions, gaps.
    fn on_event<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Raw stream bytes from one side of `flow`.
    fn on_chunk<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _chunk: &'a Chunk,
    ) -> BoxFuture<'a, ChunkVerdict> {
        Box::pin(async { ChunkVerdict::Pass })
    }

    /// An HTTP request; edits made in place are applied (proxy mode).
    fn on_request<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, RequestVerdict> {
        Box::pin(async { RequestVerdict::Continue })
    }

    /// An HTTP response; edits made in place are applied (proxy mode).
    fn on_response<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _response: &'a mut HttpResponse,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async { ResponseVerdict::Continue })
    }

    /// The run is stopping: last chance to emit records, before outputs are flushed.
    fn on_stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
