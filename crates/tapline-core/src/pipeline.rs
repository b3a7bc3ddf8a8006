//! The [`Pipeline`]: the stages of a run in declaration order, the sink their results go to,
//! and what a failing hook does. Traffic reaches it through a [`Dispatch`] per flow.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use crate::dispatch::{Dispatch, Verdicts};
use crate::event::{Event, EventKind};
use crate::flow::{Flow, Mode};
use crate::kind::Kind;
use crate::sink::EventSink;
use crate::stage::{Hook, Stage};

/// What a failed hook call (error, time-out, unusable answer) does to its flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The event goes on as if the stage had passed it (counted, warned with a rate limit).
    #[default]
    Open,
    /// The flow is closed (where verdicts apply; elsewhere the failure is only counted).
    Closed,
}

/// The stages of a run, in order, the sink their results go to, and the failure policy.
/// One pointer: every flow's [`Dispatch`] holds a clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    stages: Vec<Arc<dyn Stage>>,
    sink: Arc<dyn EventSink>,
    policy: FailurePolicy,
}

impl Pipeline {
    /// A pipeline running `stages` in this order, delivering to `sink`, failing open.
    pub fn new(stages: Vec<Arc<dyn Stage>>, sink: Arc<dyn EventSink>) -> Self {
        Pipeline {
            inner: Arc::new(Inner {
                stages,
                sink,
                policy: FailurePolicy::Open,
            }),
        }
    }

    /// The same pipeline with failure policy `policy` (`--plugin-failure`).
    #[must_use]
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        Arc::make_mut(&mut self.inner).policy = policy;
        self
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Arc<dyn Stage>] {
        &self.inner.stages
    }

    /// The sink events are delivered to.
    pub fn sink(&self) -> &Arc<dyn EventSink> {
        &self.inner.sink
    }

    /// What a failing hook does.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// The dispatch for `flow`, decided once: verdicts apply in proxy mode and are observed
    /// and counted in capture and replay modes.
    pub fn dispatch(&self, flow: &Arc<Flow>) -> Dispatch {
        let verdicts = match flow.mode {
            Mode::Proxy => Verdicts::Apply,
            Mode::Capture | Mode::Replay => Verdicts::Observe,
        };
        Dispatch::new(self.clone(), flow.clone(), verdicts)
    }

    /// Whether anything reads the contents of `kind` events, not just counts them: a sink
    /// (e.g. JSON lines), or any stage (a stage may observe them). When nothing does,
    /// producers may leave details out (a `message` without `fields`).
    pub fn reads_details(&self, kind: Kind) -> bool {
        !self.inner.stages.is_empty() || self.inner.sink.wants_details(kind)
    }

    /// Whether some stage wants packets that belong to no flow.
    pub fn wants_loose_packets(&self) -> bool {
        self.inner.stages.iter().any(|s| s.wants_packets())
    }

    /// A packet outside any flow (ARP, ICMP, a fragment): to the stages that asked for such
    /// packets, then to the sink.
    pub async fn loose_packet(&self, event: Event) {
        if matches!(event.kind, EventKind::Packet(_)) {
            for stage in self.inner.stages.iter().filter(|s| s.wants_packets()) {
                let started = std::time::Instant::now();
                let result = stage.on_event(&event).await;
                stage.counters().record_call(started.elapsed());
                if let Err(failure) = result {
                    let label = label(stage.as_ref());
                    stage
                        .counters()
                        .failed(&label, Hook::Packet, &failure, "the capture goes on");
                }
            }
        }
        self.inner.sink.emit(&event);
    }

    /// Calls every stage's `on_stop`, in order, then flushes the sink.
    pub async fn stop(&self) {
        for stage in self.inner.stages.iter() {
            let started = std::time::Instant::now();
            let result = stage.on_stop().await;
            stage.counters().record_call(started.elapsed());
            if let Err(failure) = result {
                let label = label(stage.as_ref());
                stage
                    .counters()
                    .failed(&label, Hook::Stop, &failure, "stopping anyway");
            }
        }
        self.inner.sink.flush();
    }
}

/// How logs name a stage: `lua plugin NAME`, `gRPC plugin NAME`.
pub(crate) fn label(stage: &dyn Stage) -> String {
    format!("{} plugin {}", stage.family(), stage.name())
}

/// Runs a future to completion on this thread. Capture workers use it to drive the pipeline:
/// in-process stages answer at once and remote ones only enqueue, so it rarely parks.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
