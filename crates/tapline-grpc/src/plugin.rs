//! One remote plugin as its stage, its supervisor and its capture queue share it: the
//! channel, whether it is online, what it said about itself, counters and warnings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tapline_core::{Chunk, ChunkVerdict, Flow, HttpRequest, HttpResponse, Message, StageCounters};
use tapline_core::{Hook, HookFailure, RequestVerdict, ResponseVerdict};

use crate::convert;
use crate::description::PluginDescription;
use crate::error::GrpcError;
use crate::proto;
use crate::remote::Remote;
use crate::routing::{Routing, RoutingCell};

/// A remote plugin and its state.
pub(crate) struct Plugin {
    remote: Remote,
    online: AtomicBool,
    routing: RoutingCell,
    name: OnceLock<String>,
    description: Mutex<Option<PluginDescription>>,
    counters: StageCounters,
}

impl Plugin {
    /// A plugin not yet described, offline until [`Plugin::refresh`] reaches it.
    pub(crate) fn new(remote: Remote) -> Plugin {
        Plugin {
            remote,
            online: AtomicBool::new(false),
            routing: RoutingCell::default(),
            name: OnceLock::new(),
            description: Mutex::new(None),
            counters: StageCounters::default(),
        }
    }

    /// The plugin's own name once known, else its address.
    pub(crate) fn name(&self) -> &str {
        self.name
            .get()
            .map(String::as_str)
            .unwrap_or(self.remote.address())
    }

    /// The address as given.
    pub(crate) fn address(&self) -> &str {
        self.remote.address()
    }

    /// The channel to the plugin.
    pub(crate) fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The stage's counters.
    pub(crate) fn counters(&self) -> &StageCounters {
        &self.counters
    }

    /// Whether calls are made now.
    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// The routing from the latest description (kept while offline).
    pub(crate) fn routing(&self) -> Option<Routing> {
        self.routing.get()
    }

    /// The latest description.
    pub(crate) fn description(&self) -> Option<PluginDescription> {
        self.description
            .lock()
            .ok()
            .and_then(|d| d.as_ref().cloned())
    }

    /// Fetches the plugin's description and enables it. Says whether the plugin was offline
    /// until now.
    pub(crate) async fn refresh(&self) -> Result<bool, GrpcError> {
        let description = self.remote.describe().await?;
        let _ = self.name.set(description.name.clone());
        self.routing.set(Routing::of(&description));
        tracing::info!(
            plugin = self.name(),
            "gRPC plugin at {}: {}",
            self.address(),
            description.capabilities
        );
        if let Ok(mut slot) = self.description.lock() {
            *slot = Some(description);
        }
        Ok(!self.online.swap(true, Ordering::AcqRel))
    }

    /// Stops calls until the plugin answers again (logged once per transition).
    pub(crate) fn disable(&self, why: &GrpcError) {
        if self.online.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                plugin = self.name(),
                "gRPC plugin at {} stopped answering ({why}): disabled until it answers again",
                self.address()
            );
        }
    }

    /// Counts a call not made (plugin offline, queue full).
    pub(crate) fn dropped(&self) {
        StageCounters::bump(&self.counters.dropped);
    }

    /// Disables a plugin that went away (connection refused or lost), for the supervisor
    /// to bring back.
    pub(crate) fn gone_if_unavailable(&self, error: &GrpcError) {
        if error.is_unavailable() {
            self.disable(error);
        }
    }

    /// Counts and reports a call that failed where no dispatch sees it (capture mode's queue).
    pub(crate) fn failed_unseen(&self, hook: Hook, error: &GrpcError) {
        self.gone_if_unavailable(error);
        let failure = HookFailure {
            timed_out: error.is_timeout(),
            message: error.to_string(),
        };
        let label = format!("gRPC plugin {}", self.name());
        self.counters
            .failed(&label, hook, &failure, "observed only; the capture goes on");
    }

    /// `ProcessHttpRequest`, applied to `request`.
    pub(crate) async fn process_request(
        &self,
        request: &mut HttpRequest,
        message: proto::HttpRequest,
    ) -> Result<RequestVerdict, GrpcError> {
        let answer = self.remote.http_request(message.clone()).await?;
        convert::request_verdict(answer, request, &message)
    }

    /// `ProcessHttpResponse`, applied to `response`.
    pub(crate) async fn process_response(
        &self,
        response: &mut HttpResponse,
        message: proto::HttpResponse,
    ) -> Result<ResponseVerdict, GrpcError> {
        let answer = self.remote.http_response(message.clone()).await?;
        convert::response_verdict(answer, response, &message)
    }

    /// `ProcessTunnelData` for `chunk` of `flow`.
    pub(crate) async fn process_chunk(
        &self,
        flow: &Flow,
        chunk: &Chunk,
        routing: Routing,
    ) -> Result<ChunkVerdict, GrpcError> {
        let message = convert::tunnel_message(flow, chunk, routing.leg());
        let answer = self.remote.tunnel_data(message).await?;
        convert::chunk_verdict(answer, &chunk.data, self.name())
    }

    /// `ProcessMessage` for `message` of `flow`: the verdict (edits land in `message`), and
    /// the delay asked for.
    pub(crate) async fn process_message(
        &self,
        flow: &Flow,
        message: &mut Message,
    ) -> Result<crate::message::Answer, GrpcError> {
        let request = crate::message::request(flow, message);
        let answer = self.remote.message(request).await?;
        crate::message::answer(answer, message, self.name())
    }
}
