//! Where tapline's events go: human text and JSON lines (stdout or a file), HAR files, syslog
//! (RFC 5424 or 3164 over UDP or TCP), the proxy's pcap export, and Prometheus metrics with end-of-run
//! stats. Every output is an [`EventSink`](tapline_core::EventSink); slow I/O happens on
//! background threads so `emit` never waits on the network, and `flush` at a clean stop
//! writes out everything queued.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod har;
pub mod human;
pub mod json;
pub mod lines;
pub mod metrics;
pub mod pcap_export;
pub mod query;
pub mod stats;
pub mod syslog;

pub use har::HarSink;
pub use lines::{LineFormat, LineSink};
pub use metrics::{Metrics, MetricsServer};
pub use pcap_export::PcapExport;
pub use syslog::{parse_kinds, SyslogConfig, SyslogFormat, SyslogSink, SyslogTarget};

#[cfg(test)]
mod testing;
