//! Capture mode: plugin calls are observe-only and must never stall the capture, so hooks
//! only enqueue (`try_send`, no runtime needed on the capture worker's thread) and one task
//! makes the calls in order. A full queue drops the call and counts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapline_core::{ChunkVerdict, Hook};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::convert;
use crate::plugin::Plugin;
use crate::proto::{self, process_http_request_response, process_http_response_response};

/// One call to make.
pub(crate) enum Call {
    /// `ProcessHttpRequest`.
    Request(proto::HttpRequest),
    /// `ProcessHttpResponse`.
    Response(proto::HttpResponse),
    /// `ProcessTunnelData`.
    Tunnel(proto::ProcessTunnelDataRequest),
    /// `ProcessMessage`.
    Message(proto::ProcessMessageRequest),
    /// Everything before this was handled (or dropped past the stop grace).
    Stop(oneshot::Sender<()>),
}

/// The bounded queue in front of one plugin, and its draining task.
pub(crate) struct CaptureQueue {
    plugin: Arc<Plugin>,
    calls: mpsc::Sender<Call>,
    stopping: Arc<AtomicBool>,
}

impl CaptureQueue {
    /// A queue of `capacity` calls drained by a task on `runtime`; `grace` bounds how long
    /// calls still queued at stop are made before the rest are dropped.
    pub(crate) fn start(
        plugin: Arc<Plugin>,
        capacity: usize,
        grace: Duration,
        runtime: &Handle,
    ) -> CaptureQueue {
        let (calls, queued) = mpsc::channel(capacity.max(1));
        let stopping = Arc::new(AtomicBool::new(false));
        runtime.spawn(drain(plugin.clone(), queued, stopping.clone(), grace));
        CaptureQueue {
            plugin,
            calls,
            stopping,
        }
    }

    /// Enqueues a call, or drops and counts it when the plugin is offline or the queue full.
    pub(crate) fn offer(&self, call: impl FnOnce() -> Call) {
        if !self.plugin.is_online() || self.calls.try_send(call()).is_err() {
            self.plugin.dropped();
        }
    }

    /// Makes the calls still queued (within the grace period) and returns when done.
    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let (done, finished) = oneshot::channel();
        if self.calls.send(Call::Stop(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

async fn drain(
    plugin: Arc<Plugin>,
    mut queued: mpsc::Receiver<Call>,
    stopping: Arc<AtomicBool>,
    grace: Duration,
) {
    let mut deadline: Option<Instant> = None;
    while let Some(call) = queued.recv().await {
        if stopping.load(Ordering::Acquire) {
            let end = *deadline.get_or_insert_with(|| Instant::now() + grace);
            if Instant::now() > end && !matches!(call, Call::Stop(_)) {
                plugin.dropped();
                continue;
            }
        }
        observe(&plugin, call).await;
    }
}

/// Makes one call; the answer is observed, never applied (non-pass answers are counted).
async fn observe(plugin: &Plugin, call: Call) {
    let remote = plugin.remote();
    let hook = match &call {
        Call::Request(_) => Hook::Request,
        Call::Response(_) => Hook::Response,
        Call::Tunnel(_) | Call::Stop(_) => Hook::Data,
        Call::Message(_) => Hook::Message,
    };
    let applied = match call {
        Call::Request(message) => {
            let sent = message.clone();
            remote.http_request(message).await.map(|a| {
                a.action() == process_http_request_response::Action::Abort
                    || a.modified_request.is_some_and(|m| m != sent)
            })
        }
        Call::Response(message) => {
            let sent = message.clone();
            remote.http_response(message).await.map(|a| {
                a.action() == process_http_response_response::Action::Abort
                    || a.modified_response.is_some_and(|m| m != sent)
            })
        }
        Call::Tunnel(message) => {
            let original: Bytes = message.chunk.clone();
            remote
                .tunnel_data(message)
                .await
                .and_then(|answer| convert::chunk_verdict(answer, &original, plugin.name()))
                .map(|verdict| verdict != ChunkVerdict::Pass)
        }
        Call::Message(message) => remote.message(message).await.map(|answer| {
            !matches!(
                answer.action,
                None | Some(proto::process_message_response::Action::PassThrough(_))
            )
        }),
        Call::Stop(done) => {
            let _ = done.send(());
            return;
        }
    };
    match applied {
        Ok(true) => plugin.counters().ignored(plugin.name(), "gRPC plugin"),
        Ok(false) => {}
        Err(e) => plugin.failed_unseen(hook, &e),
    }
}
