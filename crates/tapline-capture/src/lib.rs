//! Passive capture: libpcap sources (live interface or pcap/pcapng file) with a BPF filter,
//! an optional pcap copy of what was captured, and worker threads that decode packets,
//! reassemble TCP flows and feed the same [`Pipeline`](tapline_core::Pipeline) as the proxy.
//!
//! One reader thread only reads packets (libpcap, plus a light parse for the flow hash) and
//! hands them in batches over bounded channels to N workers; a flow always lands on the same
//! worker, so its events stay in order. See `docs/capture.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod error;
mod flows;
mod reader;
mod source;
mod stats;
mod worker;

pub use error::CaptureError;
pub use reader::{Capture, CaptureConfig, Limits, RunOutcome};
pub use source::{list_interfaces, Interface, SourceSpec};
pub use stats::{CaptureStats, KernelStats, LiveStats};
