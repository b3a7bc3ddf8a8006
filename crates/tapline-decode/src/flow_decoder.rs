//! [`FlowDecoder`]: turns one flow's two ordered byte streams into messages and transactions.
//!
//! The proxy (mapping flows) and the capture workers (reassembled TCP flows) both feed it.

use tapline_core::{EventKind, Protocol, Side, Timestamp};

/// Decoding limits and choices.
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// Largest body kept per HTTP message; longer bodies are flagged truncated.
    pub body_limit: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            body_limit: 1 << 20,
        }
    }
}

/// Decodes one flow. `protocol` is the protocol known or hinted for the flow; `Tcp` means
/// "sniff it from the first bytes".
#[derive(Debug)]
pub struct FlowDecoder {
    protocol: Protocol,
}

impl FlowDecoder {
    /// A decoder for a flow believed to carry `protocol`.
    pub fn new(protocol: Protocol, _config: &DecodeConfig) -> Self {
        FlowDecoder { protocol }
    }

    /// The protocol as decided so far (may change from `Tcp` once sniffed).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Feeds in-order bytes from one side; decoded events are appended to `out`.
    pub fn feed(&mut self, _from: Side, _ts: Timestamp, _data: &[u8], _out: &mut Vec<EventKind>) {}

    /// Reports `len` bytes from `from` that will never arrive (capture gap).
    pub fn gap(&mut self, _from: Side, _len: u64, _out: &mut Vec<EventKind>) {}

    /// The flow ended: flush what is pending (e.g. a close-delimited HTTP body).
    pub fn finish(&mut self, _ts: Timestamp, _out: &mut Vec<EventKind>) {}
}
