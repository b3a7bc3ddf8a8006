//! Passive capture: libpcap sources (live interface or pcap/pcapng file) with a BPF filter,
//! an optional pcap or pcapng copy of what was captured (rotated as tcpdump does), and worker threads that decode packets,
//! reassemble TCP flows and feed the same [`Pipeline`](tapline_core::Pipeline) as the proxy.
//!
//! One reader thread only reads packets (libpcap, plus a light parse for the flow hash) and
//! hands them in batches over bounded channels to N workers; a flow always lands on the same
//! worker, so its events stay in order. See `docs/capture.md`.
//!
//! Modules:
//! - `source`: opening a live interface or a capture file, listing interfaces;
//! - `reader`: the run: the reader thread, the flow hash, batches to the workers, the `-w`
//!   copy, the end-of-run outcome;
//! - `savefile`: the `-w` files: pcap or pcapng, rotated by size (`-C`) or time (`-G`),
//!   a ring or a count of files (`-W`), tcpdump's names;
//! - `batch`: a batch of packets, recycled between the reader and a worker;
//! - `worker`: a worker thread, the driver: decodes packets, asks the flow table, feeds the
//!   TCP units and delivers every event through its flow's `Dispatch`;
//! - `flow_table`: one worker's flows by 5-tuple and their policy in packet time (client
//!   end, idle sweeps, `--max-flows` eviction, port reuse, stragglers);
//! - `tcp_unit`: one TCP flow's reassembly and decoder, segments in, ordered events out;
//! - `delivery`: a tracked flow's events through its `Dispatch`, and driving pipeline calls
//!   on the worker thread;
//! - `stats`: end-of-run and live counters; `error`: what can go wrong.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod delivery;
mod error;
mod flow_table;
mod reader;
mod savefile;
mod source;
mod stats;
mod tcp_unit;
mod worker;

pub use error::CaptureError;
pub use reader::{Capture, CaptureConfig, Limits, RunOutcome};
pub use savefile::{FileFormat, WriteConfig};
pub use source::{list_interfaces, CaptureDirection, Interface, LiveSpec, SourceSpec};
pub use stats::{CaptureStats, KernelStats, LiveStats, Skipped};
