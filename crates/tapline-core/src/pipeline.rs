//! The ordered [`Pipeline`]: runs stages in declaration order and hands results to the sink.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use crate::event::{Chunk, Event, EventKind};
use crate::flow::{Flow, Mode};
use crate::http::{HttpRequest, HttpResponse};
use crate::sink::EventSink;
use crate::stage::{Interest, Stage};
use crate::verdict::{ChunkVerdict, RequestVerdict, ResponseVerdict};

/// Per-stage counters, shared with metrics and the end-of-run stats.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Hook calls made.
    pub calls: AtomicU64,
    /// Hook calls that failed (error, timeout, garbage answer) and fell back to the policy.
    pub errors: AtomicU64,
    /// Of those, calls that timed out.
    pub timeouts: AtomicU64,
    /// Calls not made because a queue was full or the stage was offline.
    pub dropped: AtomicU64,
    /// Non-pass verdicts seen in capture mode, where they are never applied.
    pub ignored_verdicts: AtomicU64,
    /// Total time spent in calls, in microseconds.
    pub busy_micros: AtomicU64,
    /// Calls per duration bucket: `latency_buckets[i]` counts calls of at most
    /// [`LATENCY_BUCKETS_MICROS`]`[i]` µs (and more than the bound before); the last slot counts
    /// longer calls. Filled by [`StageCounters::record_call`].
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    warned_ignored: AtomicBool,
}

/// Upper bounds, in microseconds, of the call duration buckets of [`StageCounters`].
pub const LATENCY_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 2_000_000,
];

impl StageCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records one call that took `elapsed`: adds it to `busy_micros` and counts it in its
    /// latency bucket (for the metrics histogram).
    pub fn record_call(&self, elapsed: std::time::Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.busy_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// The stages of a run, in order, and the sink their results go to.
#[derive(Clone)]
pub struct Pipeline {
    stages: Arc<[Arc<dyn Stage>]>,
    sink: Arc<dyn EventSink>,
}

impl Pipeline {
    /// A pipeline running `stages` in this order, delivering to `sink`.
    pub fn new(stages: Vec<Arc<dyn Stage>>, sink: Arc<dyn EventSink>) -> Self {
        Pipeline {
            stages: stages.into(),
            sink,
        }
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Arc<dyn Stage>] {
        &self.stages
    }

    /// The sink events are delivered to.
    pub fn sink(&self) -> &Arc<dyn EventSink> {
        &self.sink
    }

    /// What any stage wants for `flow`.
    pub fn interest(&self, flow: &Flow) -> Interest {
        self.stages
            .iter()
            .fold(Interest::default(), |acc, s| acc.union(s.interest(flow)))
    }

    /// Sends an observe-only event (flow start/end, packet, message, transaction, gap, record)
    /// to every interested stage in order, then to the sink.
    pub async fn observe(&self, event: Event) {
        let packet = matches!(event.kind, EventKind::Packet(_));
        if let Some(flow) = event.flow.as_deref() {
            for stage in self.stages.iter() {
                let want = stage.interest(flow);
                if (packet && want.packets) || (!packet && want.observe) {
                    StageCounters::bump(&stage.counters().calls);
                    stage.on_event(&event).await;
                }
            }
        } else if packet {
            for stage in self.stages.iter() {
                if stage.wants_packets() {
                    StageCounters::bump(&stage.counters().calls);
                    stage.on_event(&event).await;
                }
            }
        }
        self.sink.emit(&event);
    }

    /// Delivers a decoded event observe-only: HTTP requests/responses go through the request
    /// and response hooks (on a copy; verdicts are not applied, and counted in capture mode),
    /// chunks through the chunk hooks, everything else through [`Pipeline::observe`]; then
    /// the event goes to the sink. Capture workers and proxy mapping flows use this for what
    /// their [`FlowDecoder`](../../tapline_decode/index.html)s produce.
    pub async fn deliver(&self, mut event: Event) {
        let Some(flow) = event.flow.clone() else {
            return self.observe(event).await;
        };
        match &mut event.kind {
            EventKind::HttpRequest(request) => {
                self.request(&flow, request).await;
            }
            EventKind::HttpResponse(response) => {
                self.response(&flow, response).await;
            }
            EventKind::Chunk(chunk) => {
                self.chunk(&flow, chunk).await;
                if self.sink.wants_chunks() {
                    self.sink.emit(&event);
                }
                return;
            }
            _ => return self.observe(event).await,
        }
        self.sink.emit(&event);
    }

    /// Hands an event straight to the sink, skipping stages (records, stats).
    pub fn emit(&self, event: &Event) {
        self.sink.emit(event);
    }

    /// Runs a chunk through every interested stage. The result is what to forward:
    /// `Pass` (the original bytes), `Replace` (other bytes), `Hold` or `Close`. In capture mode
    /// the result is always `Pass`; other verdicts are counted and logged once.
    pub async fn chunk(&self, flow: &Arc<Flow>, chunk: &Chunk) -> ChunkVerdict {
        let mut current: Option<Chunk> = None;
        for stage in self.stages.iter() {
            if !stage.interest(flow).chunks {
                continue;
            }
            StageCounters::bump(&stage.counters().calls);
            let seen = current.as_ref().unwrap_or(chunk);
            let verdict = stage.on_chunk(flow, seen).await;
            if verdict == ChunkVerdict::Pass {
                continue;
            }
            if flow.mode == Mode::Capture {
                ignored(stage.as_ref(), "chunk");
                continue;
            }
            match verdict {
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

    /// Runs an HTTP request through every interested stage; edits accumulate in `request`.
    /// A `Respond` or `Close` ends the chain. In capture mode edits are not undone (the
    /// request is a copy) but verdicts are ignored and counted.
    pub async fn request(&self, flow: &Arc<Flow>, request: &mut HttpRequest) -> RequestVerdict {
        for stage in self.stages.iter() {
            if !stage.interest(flow).requests {
                continue;
            }
            StageCounters::bump(&stage.counters().calls);
            match stage.on_request(flow, request).await {
                RequestVerdict::Continue => {}
                _ if flow.mode == Mode::Capture => ignored(stage.as_ref(), "http request"),
                terminal => return terminal,
            }
        }
        RequestVerdict::Continue
    }

    /// Runs an HTTP response through every interested stage; edits accumulate in `response`.
    /// A `Replace` is what the next stage sees; `Close` ends the chain.
    pub async fn response(&self, flow: &Arc<Flow>, response: &mut HttpResponse) -> ResponseVerdict {
        let mut replaced = false;
        for stage in self.stages.iter() {
            if !stage.interest(flow).responses {
                continue;
            }
            StageCounters::bump(&stage.counters().calls);
            match stage.on_response(flow, response).await {
                ResponseVerdict::Continue => {}
                _ if flow.mode == Mode::Capture => ignored(stage.as_ref(), "http response"),
                ResponseVerdict::Replace(new) => {
                    *response = new;
                    replaced = true;
                }
                close @ ResponseVerdict::Close(_) => return close,
            }
        }
        if replaced {
            ResponseVerdict::Replace(response.clone())
        } else {
            ResponseVerdict::Continue
        }
    }

    /// Calls every stage's `on_stop`, in order, then flushes the sink.
    pub async fn stop(&self) {
        for stage in self.stages.iter() {
            stage.on_stop().await;
        }
        self.sink.flush();
    }
}

fn ignored(stage: &dyn Stage, what: &str) {
    let counters = stage.counters();
    StageCounters::bump(&counters.ignored_verdicts);
    if !counters.warned_ignored.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            plugin = stage.name(),
            "{what} verdicts are observed, not applied, in capture mode (counted from now on)"
        );
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::flow::{FlowId, Protocol, Route, Side};
    use crate::sink::NullSink;
    use crate::stage::BoxFuture;
    use crate::time::Timestamp;

    /// A stage that records what it saw and answers with a fixed verdict.
    struct Scripted {
        name: &'static str,
        verdict: ChunkVerdict,
        seen: Mutex<Vec<Bytes>>,
        counters: StageCounters,
    }

    impl Scripted {
        fn new(name: &'static str, verdict: ChunkVerdict) -> Arc<Self> {
            Arc::new(Scripted {
                name,
                verdict,
                seen: Mutex::default(),
                counters: StageCounters::default(),
            })
        }
    }

    impl Stage for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn interest(&self, _flow: &Flow) -> Interest {
            Interest::ALL
        }
        fn counters(&self) -> &StageCounters {
            &self.counters
        }
        fn on_chunk<'a>(
            &'a self,
            _flow: &'a Arc<Flow>,
            chunk: &'a Chunk,
        ) -> BoxFuture<'a, ChunkVerdict> {
            self.seen.lock().unwrap().push(chunk.data.clone());
            Box::pin(async move { self.verdict.clone() })
        }
        fn on_request<'a>(
            &'a self,
            _flow: &'a Arc<Flow>,
            request: &'a mut HttpRequest,
        ) -> BoxFuture<'a, RequestVerdict> {
            request.path.push_str(self.name);
            Box::pin(async { RequestVerdict::Continue })
        }
    }

    fn flow(mode: Mode) -> Arc<Flow> {
        Arc::new(Flow {
            id: FlowId(1),
            mode,
            protocol: Protocol::Tcp,
            route: Route::Mapping,
            client: "127.0.0.1:1".parse().unwrap(),
            server: "127.0.0.1:2".parse().unwrap(),
            started: Timestamp(0),
        })
    }

    fn chunk(data: &'static [u8]) -> Chunk {
        Chunk {
            from: Side::Client,
            data: Bytes::from_static(data),
        }
    }

    fn pipeline(stages: &[Arc<Scripted>]) -> Pipeline {
        let stages = stages.iter().map(|s| s.clone() as Arc<dyn Stage>).collect();
        Pipeline::new(stages, Arc::new(NullSink))
    }

    #[test]
    fn a_replacement_is_what_the_next_stage_sees() {
        let a = Scripted::new("a", ChunkVerdict::Replace(Bytes::from_static(b"new")));
        let b = Scripted::new("b", ChunkVerdict::Pass);
        let verdict =
            block_on(pipeline(&[a.clone(), b.clone()]).chunk(&flow(Mode::Proxy), &chunk(b"old")));
        assert_eq!(verdict, ChunkVerdict::Replace(Bytes::from_static(b"new")));
        assert_eq!(*b.seen.lock().unwrap(), [Bytes::from_static(b"new")]);
    }

    #[test]
    fn a_terminal_verdict_ends_the_chain() {
        let a = Scripted::new("a", ChunkVerdict::Hold);
        let b = Scripted::new("b", ChunkVerdict::Pass);
        let verdict = block_on(pipeline(&[a, b.clone()]).chunk(&flow(Mode::Proxy), &chunk(b"x")));
        assert_eq!(verdict, ChunkVerdict::Hold);
        assert!(b.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn capture_mode_counts_verdicts_without_applying_them() {
        let a = Scripted::new("a", ChunkVerdict::Close("no".into()));
        let b = Scripted::new("b", ChunkVerdict::Pass);
        let verdict =
            block_on(pipeline(&[a.clone(), b.clone()]).chunk(&flow(Mode::Capture), &chunk(b"x")));
        assert_eq!(verdict, ChunkVerdict::Pass);
        assert_eq!(StageCounters::get(&a.counters.ignored_verdicts), 1);
        assert_eq!(b.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn record_call_fills_busy_time_and_buckets() {
        let c = StageCounters::default();
        c.record_call(std::time::Duration::from_micros(50));
        c.record_call(std::time::Duration::from_micros(51));
        c.record_call(std::time::Duration::from_secs(10));
        assert_eq!(StageCounters::get(&c.busy_micros), 10_000_101);
        assert_eq!(StageCounters::get(&c.latency_buckets[0]), 1);
        assert_eq!(StageCounters::get(&c.latency_buckets[1]), 1);
        assert_eq!(StageCounters::get(&c.latency_buckets[12]), 1);
    }

    #[test]
    fn request_edits_accumulate_in_declaration_order() {
        let a = Scripted::new("a", ChunkVerdict::Pass);
        let b = Scripted::new("b", ChunkVerdict::Pass);
        let mut req = HttpRequest {
            path: "/".into(),
            ..Default::default()
        };
        let verdict = block_on(pipeline(&[a, b]).request(&flow(Mode::Proxy), &mut req));
        assert_eq!(verdict, RequestVerdict::Continue);
        assert_eq!(req.path, "/ab");
    }
}
