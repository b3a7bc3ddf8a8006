//! [`GrpcStage`]: a remote plugin as a pipeline stage.

use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use tapline_core::{
    BoxFuture, Chunk, ChunkVerdict, Flow, HookFailure, HookResult, HttpRequest, HttpResponse,
    Interest, Message, MessageVerdict, Mode, RequestVerdict, ResponseVerdict, Stage, StageCounters,
    Timestamp,
};
use tokio::runtime::Handle;

use crate::capture_queue::{Call, CaptureQueue};
use crate::convert;
use crate::description::PluginDescription;
use crate::error::GrpcError;
use crate::plugin::Plugin;
use crate::remote::Remote;
use crate::supervisor;

/// How to reach one plugin and how to treat it.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// `http://HOST:PORT`.
    pub url: String,
    /// Proxy (calls decide) or capture (calls observe, through a queue).
    pub mode: Mode,
    /// The time limit of one call (`--plugin-timeout`).
    pub timeout: Duration,
    /// How often the supervisor polls `HealthCheck`.
    pub health_every: Duration,
    /// How many calls the capture-mode queue holds before dropping.
    pub queue_capacity: usize,
}

impl GrpcConfig {
    /// The defaults: 2 s timeout, health every second, 1024 queued calls.
    pub fn new(url: impl Into<String>, mode: Mode) -> Self {
        GrpcConfig {
            url: url.into(),
            mode,
            timeout: Duration::from_secs(2),
            health_every: Duration::from_secs(1),
            queue_capacity: 1024,
        }
    }
}

/// One gRPC plugin in the pipeline. Calls go to it while it answers its health checks;
/// its capabilities and the flow's route and protocol decide what it gets. A call that fails
/// is answered with a [`HookFailure`]; the dispatch applies `--plugin-failure`.
pub struct GrpcStage {
    plugin: Arc<Plugin>,
    capture: Option<CaptureQueue>,
}

impl GrpcStage {
    /// Connects to the plugin (`GetPluginInfo`, then `GetPluginCapabilities`). A plugin
    /// that does not answer is registered offline with a warning; a supervisor task polls its
    /// health and enables it once it answers. Fails only for a bad address, or outside a
    /// tokio runtime (whose tasks must keep running for the stage's lifetime).
    pub async fn connect(config: GrpcConfig) -> Result<Arc<GrpcStage>, GrpcError> {
        let runtime = Handle::try_current().map_err(|_| GrpcError::NoRuntime)?;
        let plugin = Arc::new(Plugin::new(Remote::lazy(&config.url, config.timeout)?));
        if let Err(e) = plugin.refresh().await {
            tracing::warn!(
                "gRPC plugin at {} is unreachable ({e}): registered offline, enabled once it answers",
                config.url
            );
        }
        supervisor::spawn(Arc::downgrade(&plugin), config.health_every, &runtime);
        let capture = (config.mode == Mode::Capture).then(|| {
            CaptureQueue::start(
                plugin.clone(),
                config.queue_capacity,
                config.timeout,
                &runtime,
            )
        });
        Ok(Arc::new(GrpcStage { plugin, capture }))
    }

    /// What the plugin last said about itself (None until it answered once).
    pub fn description(&self) -> Option<PluginDescription> {
        self.plugin.description()
    }

    /// Whether calls are made now.
    pub fn is_online(&self) -> bool {
        self.plugin.is_online()
    }

    /// Skips a call to an offline plugin (counted); true when the call should be made.
    fn reachable(&self) -> bool {
        let online = self.plugin.is_online();
        if !online {
            self.plugin.dropped();
        }
        online
    }

    /// A failed call as the dispatch takes it; a plugin that went away is disabled for the
    /// supervisor to bring back.
    fn failed(&self, error: GrpcError) -> HookFailure {
        self.plugin.gone_if_unavailable(&error);
        HookFailure {
            timed_out: error.is_timeout(),
            message: error.to_string(),
        }
    }
}

impl Stage for GrpcStage {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn family(&self) -> &'static str {
        "gRPC"
    }

    fn interest(&self, flow: &Flow) -> Interest {
        self.plugin
            .routing()
            .map(|r| r.interest(flow))
            .unwrap_or_default()
    }

    fn counters(&self) -> &StageCounters {
        self.plugin.counters()
    }

    fn on_chunk<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        chunk: &'a Chunk,
    ) -> BoxFuture<'a, HookResult<ChunkVerdict>> {
        let Some(routing) = self.plugin.routing() else {
            return Box::pin(ready(Ok(ChunkVerdict::Pass)));
        };
        if let Some(queue) = &self.capture {
            queue.offer(|| Call::Tunnel(convert::tunnel_message(flow, chunk, routing.leg())));
            return Box::pin(ready(Ok(ChunkVerdict::Pass)));
        }
        if !self.reachable() {
            return Box::pin(ready(Ok(ChunkVerdict::Pass)));
        }
        Box::pin(async move {
            self.plugin
                .process_chunk(flow, chunk, routing)
                .await
                .map_err(|e| self.failed(e))
        })
    }

    fn on_request<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, HookResult<RequestVerdict>> {
        if let Some(queue) = &self.capture {
            queue.offer(|| Call::Request(convert::request_message(request)));
            return Box::pin(ready(Ok(RequestVerdict::Continue)));
        }
        if !self.reachable() {
            return Box::pin(ready(Ok(RequestVerdict::Continue)));
        }
        Box::pin(async move {
            let message = convert::request_message(request);
            self.plugin
                .process_request(request, message)
                .await
                .map_err(|e| self.failed(e))
        })
    }

    fn on_response<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        response: &'a mut HttpResponse,
    ) -> BoxFuture<'a, HookResult<ResponseVerdict>> {
        if let Some(queue) = &self.capture {
            queue.offer(|| Call::Response(convert::response_message(response)));
            return Box::pin(ready(Ok(ResponseVerdict::Continue)));
        }
        if !self.reachable() {
            return Box::pin(ready(Ok(ResponseVerdict::Continue)));
        }
        Box::pin(async move {
            let message = convert::response_message(response);
            self.plugin
                .process_response(response, message)
                .await
                .map_err(|e| self.failed(e))
        })
    }

    fn on_message<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        _ts: Timestamp,
        message: &'a mut Message,
    ) -> BoxFuture<'a, HookResult<MessageVerdict>> {
        if let Some(queue) = &self.capture {
            queue.offer(|| Call::Message(crate::message::request(flow, message)));
            return Box::pin(ready(Ok(MessageVerdict::Continue)));
        }
        if !self.reachable() {
            return Box::pin(ready(Ok(MessageVerdict::Continue)));
        }
        Box::pin(async move {
            let answer = self
                .plugin
                .process_message(flow, message)
                .await
                .map_err(|e| self.failed(e))?;
            if let Some(delay) = answer.delay {
                tokio::time::sleep(delay).await;
            }
            Ok(answer.verdict)
        })
    }

    fn on_stop(&self) -> BoxFuture<'_, HookResult<()>> {
        Box::pin(async move {
            if let Some(queue) = &self.capture {
                queue.stop().await;
            }
            Ok(())
        })
    }
}
