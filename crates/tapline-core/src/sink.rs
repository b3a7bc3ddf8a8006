//! Where events end up: outputs implement [`EventSink`].

use std::sync::Arc;

use crate::event::Event;
use crate::kind::Kind;

/// A consumer of finished events (text, JSON lines, syslog, pcap, metrics).
///
/// `emit` is called from many threads and must not block for long: sinks that do slow I/O
/// queue internally. `flush` is called once at a clean stop, after the last event.
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn emit(&self, event: &Event);
    /// Whether the sink wants `chunk` events (raw bytes as forwarded); the proxy only builds
    /// them for the sink when some sink does (e.g. the proxy pcap export).
    fn wants_chunks(&self) -> bool {
        false
    }
    /// Whether the sink reads the contents of `kind` events (`message`, `http_request`, …),
    /// not just counts them. When neither a sink nor a stage does, decoders may hand over
    /// such events without their details (a `message` without `fields` and `raw`).
    fn wants_details(&self, kind: Kind) -> bool {
        let _ = kind;
        true
    }
    /// Whether the sink shows HTTP bodies: the proxy then keeps a copy of bodies it streams
    /// (up to the body limit) in the exchange's events, as capture does.
    fn wants_bodies(&self) -> bool {
        false
    }
    /// Writes out everything queued; called at shutdown.
    fn flush(&self) {}
}

/// Hands every event to each sink in turn.
#[derive(Default, Clone)]
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }

    fn flush(&self) {
        for sink in &self.0 {
            sink.flush();
        }
    }

    fn wants_chunks(&self) -> bool {
        self.0.iter().any(|s| s.wants_chunks())
    }

    fn wants_details(&self, kind: Kind) -> bool {
        self.0.iter().any(|s| s.wants_details(kind))
    }

    fn wants_bodies(&self) -> bool {
        self.0.iter().any(|s| s.wants_bodies())
    }
}

/// Drops every event (tests, `--quiet` with no other output).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}

    fn wants_details(&self, _kind: Kind) -> bool {
        false
    }
}
