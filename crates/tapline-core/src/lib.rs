//! The vocabulary shared by every tapline crate: flows, events, verdicts, and the ordered
//! [`Pipeline`] of [`Stage`]s that both the proxy and the capture mode feed.
//!
//! Nothing here performs I/O or depends on an async runtime: stages return boxed futures so
//! that a remote (gRPC) stage can await the network while an in-process (Lua) stage answers at
//! once, and the capture mode can drive the same pipeline with [`block_on`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
pub mod dispatch;
pub mod event;
pub mod flow;
pub mod http;
pub mod kind;
pub mod pipeline;
pub mod sink;
pub mod stage;
pub mod time;
pub mod tls;
pub mod verdict;

pub use counters::{StageCounters, LATENCY_BUCKETS_MICROS};
pub use dispatch::{Dispatch, Verdicts};
pub use event::{
    Chunk, Event, EventKind, Injected, Message, PacketInfo, PgTransaction, Record, RecordLevel,
    Transaction,
};
pub use flow::{Flow, FlowEnd, FlowId, FlowIds, FlowStats, FlowUid, Mode, Protocol, Route, Side};
pub use http::{Headers, HttpRequest, HttpResponse, RequestLine};
pub use kind::{Kind, KindSet};
pub use pipeline::{block_on, FailurePolicy, Pipeline};
pub use sink::{EventSink, Fanout, NullSink};
pub use stage::{BoxFuture, Hook, HookFailure, HookResult, Interest, Stage, StageContext};
pub use time::Timestamp;
pub use tls::{TlsInfo, TlsLeg};
pub use verdict::{ChunkVerdict, MessageVerdict, PgError, RequestVerdict, ResponseVerdict};
