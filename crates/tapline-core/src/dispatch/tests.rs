use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::counters::StageCounters;
use crate::event::{PgTransaction, Transaction};
use crate::flow::{FlowId, Mode, Protocol, Route, Side};
use crate::kind::KindSet;
use crate::pipeline::block_on;
use crate::sink::EventSink;

/// A stage that records what it saw and answers with fixed verdicts, or fails.
struct Scripted {
    name: &'static str,
    verdict: ChunkVerdict,
    fails: bool,
    seen: Mutex<Vec<String>>,
    counters: StageCounters,
}

impl Scripted {
    fn new(name: &'static str, verdict: ChunkVerdict) -> Arc<Self> {
        Arc::new(Scripted {
            name,
            verdict,
            fails: false,
            seen: Mutex::default(),
            counters: StageCounters::default(),
        })
    }

    fn failing(name: &'static str) -> Arc<Self> {
        Arc::new(Scripted {
            fails: true,
            ..Arc::into_inner(Scripted::new(name, ChunkVerdict::Pass)).unwrap()
        })
    }

    fn answer<T>(&self, what: String, ok: T) -> BoxFuture<'_, HookResult<T>>
    where
        T: Send + 'static,
    {
        self.seen.lock().unwrap().push(what);
        let result = if self.fails {
            Err(HookFailure::new("boom"))
        } else {
            Ok(ok)
        };
        Box::pin(async move { result })
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Stage for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn family(&self) -> &'static str {
        "test"
    }
    fn interest(&self, _flow: &Flow) -> Interest {
        Interest::ALL
    }
    fn counters(&self) -> &StageCounters {
        &self.counters
    }
    fn on_event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, HookResult<()>> {
        self.answer(event.kind_name().to_string(), ())
    }
    fn on_chunk<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        chunk: &'a Chunk,
    ) -> BoxFuture<'a, HookResult<ChunkVerdict>> {
        let seen = String::from_utf8_lossy(&chunk.data).into_owned();
        self.answer(seen, self.verdict.clone())
    }
    fn on_request<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, HookResult<RequestVerdict>> {
        if !self.fails {
            request.path.push_str(self.name);
        }
        let verdict = match &self.verdict {
            ChunkVerdict::Close(r) => RequestVerdict::Close(r.clone()),
            _ => RequestVerdict::Continue,
        };
        self.answer(request.path.clone(), verdict)
    }
}

/// A sink that keeps the kinds it was given.
#[derive(Default)]
struct Kinds(Mutex<Vec<Kind>>);

impl EventSink for Kinds {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.kind());
    }
    fn wants_chunks(&self) -> bool {
        true
    }
}

fn flow(mode: Mode) -> Arc<Flow> {
    Arc::new(Flow::new(
        FlowId(1),
        mode,
        Protocol::Tcp,
        Route::Mapping,
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        Timestamp(0),
    ))
}

fn chunk(data: &'static [u8]) -> Chunk {
    Chunk {
        from: Side::Client,
        data: Bytes::from_static(data),
    }
}

fn pipeline(stages: &[Arc<Scripted>], sink: Arc<dyn EventSink>) -> Pipeline {
    let stages = stages.iter().map(|s| s.clone() as Arc<dyn Stage>).collect();
    Pipeline::new(stages, sink)
}

fn dispatch(stages: &[Arc<Scripted>], mode: Mode) -> Dispatch {
    pipeline(stages, Arc::new(Kinds::default())).dispatch(&flow(mode))
}

#[test]
fn a_replacement_is_what_the_next_stage_sees() {
    let a = Scripted::new("a", ChunkVerdict::Replace(Bytes::from_static(b"new")));
    let b = Scripted::new("b", ChunkVerdict::Pass);
    let d = dispatch(&[a, b.clone()], Mode::Proxy);
    let verdict = block_on(d.chunk(Timestamp(1), chunk(b"old")));
    assert_eq!(verdict, ChunkVerdict::Replace(Bytes::from_static(b"new")));
    assert_eq!(b.seen(), ["new"]);
}

#[test]
fn a_terminal_verdict_ends_the_chain() {
    let a = Scripted::new("a", ChunkVerdict::Hold);
    let b = Scripted::new("b", ChunkVerdict::Pass);
    let d = dispatch(&[a, b.clone()], Mode::Proxy);
    assert_eq!(
        block_on(d.chunk(Timestamp(1), chunk(b"x"))),
        ChunkVerdict::Hold
    );
    assert!(b.seen().is_empty());
}

#[test]
fn capture_mode_counts_verdicts_without_applying_them() {
    let a = Scripted::new("a", ChunkVerdict::Close("no".into()));
    let b = Scripted::new("b", ChunkVerdict::Pass);
    let d = dispatch(&[a.clone(), b.clone()], Mode::Capture);
    assert_eq!(
        block_on(d.chunk(Timestamp(1), chunk(b"x"))),
        ChunkVerdict::Pass
    );
    assert_eq!(StageCounters::get(&a.counters.ignored_verdicts), 1);
    assert_eq!(b.seen().len(), 1);
    // The same for a proxy flow's decoder, which reads bytes already forwarded.
    let d = dispatch(std::slice::from_ref(&a), Mode::Proxy).observing();
    let mut req = HttpRequest::default();
    assert_eq!(block_on(d.request(&mut req)), RequestVerdict::Continue);
    assert_eq!(StageCounters::get(&a.counters.ignored_verdicts), 2);
}

#[test]
fn request_edits_accumulate_in_declaration_order() {
    let a = Scripted::new("a", ChunkVerdict::Pass);
    let b = Scripted::new("b", ChunkVerdict::Pass);
    let mut req = HttpRequest {
        path: "/".into(),
        ..Default::default()
    };
    let d = dispatch(&[a.clone(), b], Mode::Proxy);
    assert_eq!(block_on(d.request(&mut req)), RequestVerdict::Continue);
    assert_eq!(req.path, "/ab");
    assert_eq!(StageCounters::get(&a.counters.calls), 1);
}

#[test]
fn a_failing_stage_is_passed_over_when_failing_open() {
    let a = Scripted::failing("a");
    let b = Scripted::new("b", ChunkVerdict::Pass);
    let d = dispatch(&[a.clone(), b.clone()], Mode::Proxy);
    let mut req = HttpRequest::default();
    assert_eq!(block_on(d.request(&mut req)), RequestVerdict::Continue);
    assert_eq!(req.path, "b", "the next stage still runs");
    assert_eq!(
        block_on(d.chunk(Timestamp(1), chunk(b"x"))),
        ChunkVerdict::Pass
    );
    assert_eq!(StageCounters::get(&a.counters.errors), 2);
    assert_eq!(StageCounters::get(&a.counters.calls), 2);
}

#[test]
fn a_failing_stage_closes_the_flow_when_failing_closed() {
    let a = Scripted::failing("a");
    let b = Scripted::new("b", ChunkVerdict::Pass);
    let p = pipeline(&[a.clone(), b.clone()], Arc::new(Kinds::default()))
        .with_failure_policy(FailurePolicy::Closed);
    let d = p.dispatch(&flow(Mode::Proxy));
    let mut req = HttpRequest::default();
    match block_on(d.request(&mut req)) {
        RequestVerdict::Close(reason) => {
            assert!(
                reason.contains("test plugin a failed in on_request: boom"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(b.seen().is_empty(), "the chain ends at the failure");
    // An observe-only hook that fails asks the flow to close at its next verdict.
    let d = p.dispatch(&flow(Mode::Proxy));
    block_on(d.event(Timestamp(1), EventKind::FlowStart));
    assert!(d.close_requested().is_some());
    assert!(matches!(
        block_on(d.chunk(Timestamp(2), chunk(b"x"))),
        ChunkVerdict::Close(_)
    ));
    // Where verdicts are observed, nothing closes.
    let d = p.dispatch(&flow(Mode::Capture));
    assert_eq!(block_on(d.request(&mut req)), RequestVerdict::Continue);
    block_on(d.event(Timestamp(1), EventKind::FlowStart));
    assert!(d.close_requested().is_none());
}

#[test]
fn events_reach_observers_then_the_sink() {
    let a = Scripted::new("a", ChunkVerdict::Pass);
    let sink = Arc::new(Kinds::default());
    let d = pipeline(std::slice::from_ref(&a), sink.clone()).dispatch(&flow(Mode::Proxy));
    block_on(d.event(Timestamp(1), EventKind::FlowStart));
    block_on(d.event(
        Timestamp(2),
        EventKind::Transaction(Transaction::Postgres(PgTransaction::default())),
    ));
    block_on(d.event(Timestamp(3), EventKind::HttpRequest(HttpRequest::default())));
    block_on(d.chunk(Timestamp(4), chunk(b"bytes")));
    assert_eq!(a.seen(), ["flow_start", "transaction", "bytes"]);
    assert_eq!(
        *sink.0.lock().unwrap(),
        [
            Kind::FlowStart,
            Kind::Transaction,
            Kind::HttpRequest,
            Kind::Chunk
        ]
    );
}

#[test]
fn decoded_http_goes_through_the_hooks_then_to_the_sink() {
    let a = Scripted::new("a", ChunkVerdict::Pass);
    let sink = Arc::new(Kinds::default());
    let d = pipeline(std::slice::from_ref(&a), sink.clone()).dispatch(&flow(Mode::Capture));
    block_on(d.decoded(
        Timestamp(1),
        EventKind::HttpRequest(HttpRequest {
            path: "/x".into(),
            ..Default::default()
        }),
    ));
    assert_eq!(a.seen(), ["/xa"]);
    assert_eq!(*sink.0.lock().unwrap(), [Kind::HttpRequest]);
    assert_eq!(KindSet::ALL.iter().count(), Kind::COUNT);
}

/// A stage that only observes flow starts, and fails doing it.
struct FailsAtStart(StageCounters);

impl Stage for FailsAtStart {
    fn name(&self) -> &str {
        "starter"
    }
    fn family(&self) -> &'static str {
        "test"
    }
    fn interest(&self, _flow: &Flow) -> Interest {
        Interest {
            observe: KindSet::of(&[Kind::FlowStart]),
            ..Interest::default()
        }
    }
    fn counters(&self) -> &StageCounters {
        &self.0
    }
    fn on_event<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, HookResult<()>> {
        Box::pin(async { Err(HookFailure::new("no")) })
    }
}

#[test]
fn a_requested_close_is_honoured_even_where_no_stage_reads_the_traffic() {
    let stage: Arc<dyn Stage> = Arc::new(FailsAtStart(StageCounters::default()));
    let p = Pipeline::new(vec![stage], Arc::new(Kinds::default()))
        .with_failure_policy(FailurePolicy::Closed);
    let d = p.dispatch(&flow(Mode::Proxy));
    block_on(d.event(Timestamp(1), EventKind::FlowStart));
    assert!(matches!(
        block_on(d.chunk(Timestamp(2), chunk(b"x"))),
        ChunkVerdict::Close(_)
    ));
    assert!(matches!(
        block_on(d.request(&mut HttpRequest::default())),
        RequestVerdict::Close(_)
    ));
    // A decoder's observing dispatch of the same flow never closes anything.
    let observer = d.observing();
    assert_eq!(
        block_on(observer.chunk(Timestamp(3), chunk(b"x"))),
        ChunkVerdict::Pass
    );
    assert_eq!(
        block_on(observer.request(&mut HttpRequest::default())),
        RequestVerdict::Continue
    );
}

/// A sink that keeps the paths of the requests it gets.
#[derive(Default)]
struct Paths(Mutex<Vec<String>>);

impl EventSink for Paths {
    fn emit(&self, event: &Event) {
        if let EventKind::HttpRequest(r) = &event.kind {
            self.0.lock().unwrap().push(r.path.clone());
        }
    }
}

#[test]
fn edits_reach_the_outputs_in_both_modes() {
    let a = Scripted::new("a", ChunkVerdict::Pass);
    let sink = Arc::new(Paths::default());
    let p = pipeline(std::slice::from_ref(&a), sink.clone());
    let request = || {
        EventKind::HttpRequest(HttpRequest {
            path: "/wire".into(),
            ..Default::default()
        })
    };
    block_on(
        p.dispatch(&flow(Mode::Capture))
            .decoded(Timestamp(1), request()),
    );
    block_on(
        p.dispatch(&flow(Mode::Proxy))
            .decoded(Timestamp(2), request()),
    );
    // (A capture plugin redacting a header before the outputs log it relies on this.)
    assert_eq!(*sink.0.lock().unwrap(), ["/wirea", "/wirea"]);
}
