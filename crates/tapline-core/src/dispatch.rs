//! [`Dispatch`]: the plugin contract applied to one flow. It is the one way traffic reaches
//! the stages, in both modes: which stage gets which event, whether verdicts are applied
//! (proxy) or observed and counted (capture, and HTTP sniffed behind a raw relay), and, for
//! every call of every stage alike, timing, counters, rate-limited warnings and the failure
//! policy.
//!
//! Five doors, one per kind of answer the caller needs:
//! - [`Dispatch::chunk`]: stream bytes, answered with what to forward;
//! - [`Dispatch::request`] and [`Dispatch::response`]: HTTP messages, edited in place and
//!   answered with what to do (the proxy reports them later, whole, through `event`);
//! - [`Dispatch::message`]: decoded (PostgreSQL) messages, edited in place and answered
//!   with what to do;
//! - [`Dispatch::event`]: everything else (flow start/end, packets, gaps, transactions,
//!   finished messages, records), observed by the stages that want it, then handed to the
//!   sink.
//!
//! [`Dispatch::decoded`] delivers what a decoder produced through the right door, and
//! [`Dispatch::observe_chunk`] shows the hooks bytes that are reported as messages.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::event::{Chunk, Event, EventKind, Message};
use crate::flow::{Flow, Side};
use crate::http::{HttpRequest, HttpResponse};
use crate::kind::Kind;
use crate::pipeline::{label, FailurePolicy, Pipeline};
use crate::stage::{BoxFuture, Hook, HookFailure, HookResult, Interest, Stage};
use crate::time::Timestamp;
use crate::verdict::{ChunkVerdict, MessageVerdict, RequestVerdict, ResponseVerdict};

/// Whether a flow's verdicts change its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdicts {
    /// Verdicts are applied (the proxy's own traffic).
    Apply,
    /// Verdicts are observed and counted, never applied (capture; decoders that run behind a
    /// relay, after the bytes went on).
    Observe,
}

/// The plugin contract for one flow. Made once per flow by [`Pipeline::dispatch`]; cheap to
/// clone (clones share the flow's close request).
#[derive(Clone)]
pub struct Dispatch {
    pipeline: Pipeline,
    flow: Arc<Flow>,
    /// What any stage wants of this flow.
    interest: Interest,
    sink_chunks: bool,
    verdicts: Verdicts,
    /// Why a failing observe-only hook closed the flow (failure policy `closed`), for the
    /// traffic to act on at its next verdict; only where both can happen (it costs an
    /// allocation per flow, which a capture of many flows would feel).
    close: Option<Arc<OnceLock<String>>>,
}

impl Dispatch {
    pub(crate) fn new(pipeline: Pipeline, flow: Arc<Flow>, verdicts: Verdicts) -> Dispatch {
        let interest = interest_of(&pipeline, &flow);
        let close = (verdicts == Verdicts::Apply
            && pipeline.failure_policy() == FailurePolicy::Closed)
            .then(Arc::default);
        Dispatch {
            sink_chunks: pipeline.sink().wants_chunks(),
            pipeline,
            flow,
            interest,
            close,
            verdicts,
        }
    }

    /// The flow.
    pub fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// The pipeline behind it.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// What any stage wants of this flow.
    pub fn interest(&self) -> Interest {
        self.interest
    }

    /// Whether `chunk` events are worth building: a stage reads chunks or the sink wants them.
    pub fn wants_chunks(&self) -> bool {
        self.interest.chunks || self.sink_chunks
    }

    /// Whether verdicts change the traffic.
    pub fn verdicts(&self) -> Verdicts {
        self.verdicts
    }

    /// The same flow with verdicts observed and counted, for a decoder that reads the bytes
    /// after they went on.
    pub fn observing(&self) -> Dispatch {
        Dispatch {
            verdicts: Verdicts::Observe,
            ..self.clone()
        }
    }

    /// The flow changed (its protocol was found out): what the stages want is asked again.
    pub fn set_flow(&mut self, flow: Arc<Flow>) {
        self.interest = interest_of(&self.pipeline, &flow);
        self.flow = flow;
    }

    /// Why the flow must close, when a failing hook said so (failure policy `closed`).
    pub fn close_requested(&self) -> Option<&str> {
        self.close.as_ref()?.get().map(String::as_str)
    }

    /// The close a failing hook asked for, where verdicts apply.
    fn must_close(&self) -> Option<String> {
        match self.verdicts {
            Verdicts::Apply => self.close_requested().map(str::to_string),
            Verdicts::Observe => None,
        }
    }

    /// Runs stream bytes through the stages that read chunks; the answer says what to
    /// forward: `Pass` (the bytes as given), `Replace` (other bytes), `Hold` or `Close`.
    /// What is forwarded then goes to the sink when it wants chunks. Where verdicts are
    /// observed the answer is always `Pass` and the rest is counted.
    pub async fn chunk(&self, ts: Timestamp, chunk: Chunk) -> ChunkVerdict {
        let verdict = if let Some(reason) = self.must_close() {
            ChunkVerdict::Close(reason)
        } else if self.interest.chunks {
            self.chunk_hooks(&chunk).await
        } else {
            ChunkVerdict::Pass
        };
        if self.sink_chunks {
            let forwarded = match &verdict {
                ChunkVerdict::Pass => Some(chunk),
                ChunkVerdict::Replace(data) => Some(Chunk {
                    from: chunk.from,
                    data: data.clone(),
                }),
                ChunkVerdict::Hold | ChunkVerdict::Close(_) => None,
            };
            if let Some(c) = forwarded.filter(|c| !c.data.is_empty()) {
                self.pipeline
                    .sink()
                    .emit(&Event::on_flow(&self.flow, ts, EventKind::Chunk(c)));
            }
        }
        verdict
    }

    /// Stream bytes the flow reports otherwise (an HTTP exchange's bytes, which outputs get
    /// as its messages): the stages that read chunks observe them, their verdicts are counted
    /// and never applied, and the sink does not get them.
    pub async fn observe_chunk(&self, chunk: &Chunk) {
        if self.interest.chunks {
            self.observing().chunk_hooks(chunk).await;
        }
    }

    async fn chunk_hooks(&self, chunk: &Chunk) -> ChunkVerdict {
        let mut current: Option<Chunk> = None;
        for stage in self.stages(|i| i.chunks) {
            let seen = current.as_ref().unwrap_or(chunk);
            let verdict = match self
                .call(stage, Hook::Data, stage.on_chunk(&self.flow, seen))
                .await
            {
                Ok(v) => v,
                Err(Some(reason)) => return ChunkVerdict::Close(reason),
                Err(None) => continue,
            };
            match verdict {
                ChunkVerdict::Pass => {}
                _ if self.verdicts == Verdicts::Observe => {
                    stage.counters().ignored(stage.name(), "chunk")
                }
                ChunkVerdict::Replace(data) => {
                    current = Some(Chunk {
                        from: chunk.from,
                        data,
                    })
                }
                terminal => return terminal,
            }
        }
        match current {
            Some(c) => ChunkVerdict::Replace(c.data),
            None => ChunkVerdict::Pass,
        }
    }

    /// Runs an HTTP request through the stages that read requests; their edits accumulate in
    /// `request`. A `Respond` or `Close` ends the chain. Where verdicts are observed, they
    /// are only counted; the edits stay in the caller's copy (see [`Dispatch::decoded`]).
    pub async fn request(&self, request: &mut HttpRequest) -> RequestVerdict {
        if let Some(reason) = self.must_close() {
            return RequestVerdict::Close(reason);
        }
        if !self.interest.requests {
            return RequestVerdict::Continue;
        }
        for stage in self.stages(|i| i.requests) {
            match self
                .call(stage, Hook::Request, stage.on_request(&self.flow, request))
                .await
            {
                Ok(RequestVerdict::Continue) | Err(None) => {}
                Err(Some(reason)) => return RequestVerdict::Close(reason),
                Ok(_) if self.verdicts == Verdicts::Observe => {
                    stage.counters().ignored(stage.name(), "http request")
                }
                Ok(terminal) => return terminal,
            }
        }
        RequestVerdict::Continue
    }

    /// Runs an HTTP response through the stages that read responses; edits accumulate in
    /// `response`, a `Replace` is what the next stage sees, a `Close` ends the chain.
    pub async fn response(&self, response: &mut HttpResponse) -> ResponseVerdict {
        if let Some(reason) = self.must_close() {
            return ResponseVerdict::Close(reason);
        }
        if !self.interest.responses {
            return ResponseVerdict::Continue;
        }
        let mut replaced = false;
        for stage in self.stages(|i| i.responses) {
            match self
                .call(
                    stage,
                    Hook::Response,
                    stage.on_response(&self.flow, response),
                )
                .await
            {
                Ok(ResponseVerdict::Continue) | Err(None) => {}
                Err(Some(reason)) => return ResponseVerdict::Close(reason),
                Ok(_) if self.verdicts == Verdicts::Observe => {
                    stage.counters().ignored(stage.name(), "http response")
                }
                Ok(ResponseVerdict::Replace(new)) => {
                    *response = new;
                    replaced = true;
                }
                Ok(close @ ResponseVerdict::Close(_)) => return close,
            }
        }
        if replaced {
            ResponseVerdict::Replace(response.clone())
        } else {
            ResponseVerdict::Continue
        }
    }

    /// Runs a decoded message seen at `ts` through the stages that read messages; edits to
    /// its fields accumulate in `message`. A `PgError` or `Close` ends the chain; the answer
    /// names the stage that gave it (as stats name stages). Where verdicts are observed,
    /// they are only counted; the edits stay in the caller's copy.
    pub async fn message(
        &self,
        ts: Timestamp,
        message: &mut Message,
    ) -> (MessageVerdict, Option<String>) {
        if let Some(reason) = self.must_close() {
            return (MessageVerdict::Close(reason), None);
        }
        if !self.interest.messages {
            return (MessageVerdict::Continue, None);
        }
        let (from, type_name) = (message.from, message.type_name.clone());
        for stage in self
            .stages(|i| i.messages)
            .filter(|s| s.wants_message(from, &type_name))
        {
            match self
                .call(
                    stage,
                    Hook::Message,
                    stage.on_message(&self.flow, ts, message),
                )
                .await
            {
                Ok(MessageVerdict::Continue) | Err(None) => {}
                Err(Some(reason)) => return (MessageVerdict::Close(reason), None),
                Ok(_) if self.verdicts == Verdicts::Observe => {
                    stage.counters().ignored(stage.name(), "message")
                }
                Ok(terminal) => return (terminal, Some(label(stage))),
            }
        }
        (MessageVerdict::Continue, None)
    }

    /// Whether some stage wants messages of this type from `from` (see
    /// [`Stage::wants_message`]).
    pub fn wants_message(&self, from: Side, type_name: &str) -> bool {
        self.interest.messages
            && self
                .stages(|i| i.messages)
                .any(|s| s.wants_message(from, type_name))
    }

    /// An event that takes no verdict: the stages that observe its kind see it (flow
    /// start/end, packets, gaps, transactions), then the sink gets it. HTTP messages and
    /// decoded messages (whose hooks ran through [`Dispatch::request`],
    /// [`Dispatch::response`] and [`Dispatch::message`]), chunks and records go to the sink
    /// only.
    pub async fn event(&self, ts: Timestamp, kind: EventKind) {
        let event = Event::on_flow(&self.flow, ts, kind);
        let kind = event.kind();
        let observed = !matches!(
            kind,
            Kind::HttpRequest | Kind::HttpResponse | Kind::Message | Kind::Chunk
        );
        if let (true, Some(hook)) = (observed && self.interest.wants(kind), Hook::for_kind(kind)) {
            for stage in self.stages(|i| i.wants(kind)) {
                if let Err(Some(reason)) = self.call(stage, hook, stage.on_event(&event)).await {
                    if let Some(close) = &self.close {
                        let _ = close.set(reason);
                    }
                }
            }
        }
        self.pipeline.sink().emit(&event);
    }

    /// Delivers what a decoder produced: HTTP requests and responses and decoded messages
    /// through their hooks and then, as the hooks left them, to the sink (where verdicts are observed, edits still
    /// reach the outputs: a capture plugin can redact a header before it is logged); chunks
    /// through [`Dispatch::chunk`]; everything else through [`Dispatch::event`].
    pub async fn decoded(&self, ts: Timestamp, kind: EventKind) {
        match kind {
            EventKind::HttpRequest(mut request) => {
                self.request(&mut request).await;
                self.event(ts, EventKind::HttpRequest(request)).await;
            }
            EventKind::HttpResponse(mut response) => {
                if let ResponseVerdict::Replace(r) = self.response(&mut response).await {
                    response = r;
                }
                self.event(ts, EventKind::HttpResponse(response)).await;
            }
            EventKind::Message(mut message) => {
                self.message(ts, &mut message).await;
                self.event(ts, EventKind::Message(message)).await;
            }
            EventKind::Chunk(chunk) => {
                self.chunk(ts, chunk).await;
            }
            other => self.event(ts, other).await,
        }
    }

    /// The stages whose interest in this flow passes `wanted`, in order.
    fn stages(&self, wanted: impl Fn(Interest) -> bool) -> impl Iterator<Item = &dyn Stage> {
        let flow = &self.flow;
        self.pipeline
            .stages()
            .iter()
            .map(|s| s.as_ref())
            .filter(move |s| wanted(s.interest(flow)))
    }

    /// Makes one hook call, timed and counted. A failure is counted and warned about; the
    /// error says why the flow must close (`Some`) or that the event goes on (`None`).
    async fn call<T>(
        &self,
        stage: &dyn Stage,
        hook: Hook,
        call: BoxFuture<'_, HookResult<T>>,
    ) -> Result<T, Option<String>> {
        let started = Instant::now();
        let result = call.await;
        stage.counters().record_call(started.elapsed());
        result.map_err(|failure| self.failed(stage, hook, &failure))
    }

    fn failed(&self, stage: &dyn Stage, hook: Hook, failure: &HookFailure) -> Option<String> {
        let closing = self.verdicts == Verdicts::Apply
            && self.pipeline.failure_policy() == FailurePolicy::Closed;
        let consequence = match (self.verdicts, closing) {
            (Verdicts::Apply, true) => "closing the flow",
            (Verdicts::Apply, false) => "forwarding the original data",
            (Verdicts::Observe, _) => "observed only; the traffic goes on",
        };
        let label = label(stage);
        stage.counters().failed(&label, hook, failure, consequence);
        closing.then(|| format!("{label} failed in {hook}: {}", failure.message))
    }
}

/// What any stage of `pipeline` wants of `flow`.
fn interest_of(pipeline: &Pipeline, flow: &Flow) -> Interest {
    pipeline
        .stages()
        .iter()
        .fold(Interest::default(), |acc, s| acc.union(s.interest(flow)))
}

#[cfg(test)]
mod tests;
