//! What stages want of a flow is asked again once its protocol is sniffed: a stage that
//! reads only HTTP chunks gets the bytes that come after the sniff, also when they were held
//! behind a hole and go out in the same packet as the bytes that decided it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tapline_capture::{Capture, CaptureConfig, Limits, SourceSpec};
use tapline_core::{
    BoxFuture, Chunk, ChunkVerdict, Flow, HookResult, HttpRequest, Interest, NullSink, Pipeline,
    Protocol, RequestVerdict, Stage, StageCounters,
};
use tapline_decode::DecodeConfig;

mod common;
use common::{tcp, PcapFile, CLIENT, SERVER};

/// A stage that reads the chunks of HTTP flows only, and their requests.
#[derive(Default)]
struct HttpChunks {
    chunks: Mutex<Vec<(Protocol, Vec<u8>)>>,
    requests: AtomicU64,
    counters: StageCounters,
}

impl Stage for HttpChunks {
    fn name(&self) -> &str {
        "http-chunks"
    }
    fn family(&self) -> &'static str {
        "test"
    }
    fn interest(&self, flow: &Flow) -> Interest {
        Interest {
            chunks: flow.protocol == Protocol::Http,
            requests: true,
            ..Interest::default()
        }
    }
    fn counters(&self) -> &StageCounters {
        &self.counters
    }
    fn on_chunk<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        chunk: &'a Chunk,
    ) -> BoxFuture<'a, HookResult<ChunkVerdict>> {
        self.chunks
            .lock()
            .unwrap()
            .push((flow.protocol, chunk.data.to_vec()));
        Box::pin(async { Ok(ChunkVerdict::Pass) })
    }
    fn on_request<'a>(
        &'a self,
        _flow: &'a Arc<Flow>,
        _request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, HookResult<RequestVerdict>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(RequestVerdict::Continue) })
    }
}

#[test]
fn what_stages_want_is_asked_again_once_the_protocol_is_sniffed() {
    let mut pcap = PcapFile::new();
    let c = (CLIENT, 40000);
    let s = (SERVER, 7000);
    let req = b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    pcap.frame(0, &tcp(c, s, 100, 0, "S", b""));
    pcap.frame(1, &tcp(s, c, 500, 101, "SA", b""));
    // The request's tail comes first: its head and tail go out together, and the protocol
    // is sniffed from the head, in between.
    pcap.frame(2, &tcp(c, s, 111, 501, "A", &req[10..]));
    pcap.frame(3, &tcp(c, s, 101, 501, "A", &req[..10]));
    pcap.frame(4, &tcp(s, c, 501, 129, "A", resp));
    let path = pcap.save("sniffed.pcap");
    let capture = Capture::open(CaptureConfig {
        source: SourceSpec::File(path),
        filter: None,
        count: None,
        write: None,
        workers: 1,
        limits: Limits::default(),
        decode: DecodeConfig::default(),
    })
    .unwrap();
    let stage = Arc::new(HttpChunks::default());
    // No sink reads chunks: only the stage's interest decides.
    let pipeline = Pipeline::new(vec![stage.clone()], Arc::new(NullSink));
    capture.run(&pipeline, &AtomicBool::new(false)).unwrap();
    assert_eq!(
        *stage.chunks.lock().unwrap(),
        [
            (Protocol::Http, req[10..].to_vec()),
            (Protocol::Http, resp.to_vec())
        ],
        "the bytes before the protocol was known were a TCP flow's"
    );
    assert_eq!(stage.requests.load(Ordering::Relaxed), 1);
}
