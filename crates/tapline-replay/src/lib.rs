//! `tapline replay`: traffic captured earlier (a pcap/pcapng file decoded as `tapline capture
//! -r` does, tapline's JSON lines, or a HAR file) sent again to a target, with what came back
//! compared to what was captured.
//!
//! The capture is streamed: a source reads it on its own thread and hands [`feed::Feed`]s
//! over a bounded channel, so a replay holds a bounded window of the capture, not the file.
//! The engine groups each captured connection's feeds into units of work (one HTTP request,
//! or one PostgreSQL simple query with its COPY data, or one extended-protocol batch up to
//! `Sync`), applies the selection (`--limit`, `--filter-*`) and hands them to one task per
//! captured connection, which opens its own connection to the target and sends the units at
//! their captured times (scaled by `--speed`). Every replay connection is a flow of
//! [`Mode::Replay`](tapline_core::Mode::Replay): the bytes both ways go through tapline's
//! decoders and the run's [`Pipeline`](tapline_core::Pipeline), so plugins and outputs see
//! replayed exchanges as they see captured ones, and the comparison reads the same
//! transactions the capture's decoder made.
//!
//! Modules:
//! - `feed`: what sources hand the engine; `source`: the pcap, JSON-lines and HAR readers;
//! - `unit`: feeds grouped into units of work per connection, and the selection;
//! - `engine`: the run: units to connection tasks, pacing, the first fatal error;
//! - `conn`: one replay connection (plain or TLS), its flow, decoder and events;
//! - `http`: an HTTP connection's replay; `pg`: a PostgreSQL session's (start-up, auth);
//! - `report`: captured against replayed outcomes, counts, latencies, the summary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod engine;
pub mod feed;
mod http;
mod pg;
pub mod report;
pub mod source;
mod target;
mod unit;

pub use engine::{run, Replay};
pub use report::{Report, Verdict};
pub use source::{Source, SourceError};
pub use target::{parse_target, PgOptions, Proto, SslMode, Target, TargetError, Targets};
pub use unit::Selection;

/// How fast captured time passes in the replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// N times faster than captured (1 = as captured).
    Factor(f64),
    /// No waiting between units.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Speed, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!("'{s}' is not a positive number or max")),
        }
    }
}
