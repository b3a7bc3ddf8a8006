//! One TCP flow's stream: the reassembler puts each direction's bytes in sequence order and
//! the flow's [`FlowDecoder`] (made on the first stream bytes, dropped once the flow turns
//! opaque) decodes them. Segments (and a finish) in, the flow's [`StreamEvent`]s out, in
//! order, appended to a `Vec`: no pipeline, no I/O, no clock. The worker delivers them.

use bytes::Bytes;
use tapline_core::{EventKind, Protocol, Side, Timestamp};
use tapline_decode::reassembly::{Budget, Closed, Delivery, Segment, TcpReassembler};
use tapline_decode::{DecodeConfig, FlowDecoder};

/// What happened on a flow's stream, in order.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// The next in-order bytes from `from`: how many, and the bytes themselves when they
    /// may make a `chunk` event (see [`Env::chunks`]).
    Data {
        /// Who sent them.
        from: Side,
        /// How many.
        len: usize,
        /// A copy, when chunks may be wanted.
        bytes: Option<Bytes>,
    },
    /// `len` bytes from `from` were never captured and never will be.
    Gap {
        /// Whose bytes are missing.
        from: Side,
        /// How many.
        len: u64,
    },
    /// The decoder settled on the flow's protocol, or it changed (PostgreSQL to TLS).
    /// Comes before what was decoded with it; reported once per change.
    Protocol(Protocol),
    /// What the decoder produced (HTTP messages, PostgreSQL messages, transactions).
    Decoded(EventKind),
}

/// What a unit borrows from its worker for one call.
pub(crate) struct Env<'a> {
    /// The worker's reassembly buffers and counters.
    pub budget: &'a mut Budget,
    /// How flows are decoded.
    pub decode: &'a DecodeConfig,
    /// Whether `chunk` events are wanted for the flow as it is now. After a
    /// [`StreamEvent::Protocol`] in the same call the bytes are copied anyway: what is
    /// wanted of the flow may change with its protocol, and the caller asks again.
    pub chunks: bool,
}

/// The stream of one TCP flow.
#[derive(Debug)]
pub(crate) struct TcpUnit {
    reassembler: TcpReassembler,
    decoding: Decoding,
}

/// The decoding half, apart from the reassembler that feeds it.
#[derive(Debug)]
struct Decoding {
    /// Made on the first stream bytes; `None` again once it went opaque.
    decoder: Option<Box<FlowDecoder>>,
    /// The decoder went opaque: nothing more is decoded from this flow.
    opaque: bool,
    /// Client and server ports, the decoder's hints.
    ports: (u16, u16),
    /// The protocol last reported (a flow starts as plain TCP).
    protocol: Protocol,
    /// The protocol changed during this call.
    changed: bool,
}

impl TcpUnit {
    /// A flow between these client and server ports, nothing seen yet.
    pub(crate) fn new(client_port: u16, server_port: u16) -> Self {
        TcpUnit {
            reassembler: TcpReassembler::new(),
            decoding: Decoding {
                decoder: None,
                opaque: false,
                ports: (client_port, server_port),
                protocol: Protocol::Tcp,
                changed: false,
            },
        }
    }

    /// Takes one segment sent by `from` at `ts`; the events it causes go to `out`.
    pub(crate) fn segment(
        &mut self,
        from: Side,
        segment: &Segment<'_>,
        ts: Timestamp,
        env: &mut Env<'_>,
        out: &mut Vec<StreamEvent>,
    ) {
        let decoding = &mut self.decoding;
        decoding.changed = false;
        let (decode, chunks) = (env.decode, env.chunks);
        self.reassembler
            .segment(from, segment, env.budget, &mut |delivery| {
                decoding.take(delivery, ts, decode, chunks, out)
            });
    }

    /// The flow is over (closed, timed out, evicted, end of capture): open holes become
    /// gaps, what was buffered behind them is delivered, and the decoder flushes what it
    /// holds (a close-delimited body). `ts` is the flow's last time.
    pub(crate) fn finish(&mut self, ts: Timestamp, env: &mut Env<'_>, out: &mut Vec<StreamEvent>) {
        let decoding = &mut self.decoding;
        decoding.changed = false;
        let (decode, chunks) = (env.decode, env.chunks);
        self.reassembler.finish(env.budget, &mut |delivery| {
            decoding.take(delivery, ts, decode, chunks, out)
        });
        if let Some(decoder) = decoding.decoder.as_mut() {
            let mut decoded = Vec::new();
            decoder.finish(ts, &mut decoded);
            decoding.decoded(decoded, out);
        }
    }

    /// Whether TCP says the connection is over (both FINs, or a reset).
    pub(crate) fn closed(&self) -> Option<Closed> {
        self.reassembler.closed()
    }
}

impl Decoding {
    fn take(
        &mut self,
        delivery: Delivery<'_>,
        ts: Timestamp,
        decode: &DecodeConfig,
        chunks: bool,
        out: &mut Vec<StreamEvent>,
    ) {
        let mut decoded = Vec::new();
        match delivery {
            Delivery::Data { from, data } => {
                out.push(StreamEvent::Data {
                    from,
                    len: data.len(),
                    bytes: (chunks || self.changed).then(|| Bytes::copy_from_slice(data)),
                });
                if self.opaque {
                    return;
                }
                let (client, server) = self.ports;
                self.decoder
                    .get_or_insert_with(|| Box::new(FlowDecoder::for_ports(client, server, decode)))
                    .feed(from, ts, data, &mut decoded);
            }
            Delivery::Gap { from, len } => {
                out.push(StreamEvent::Gap { from, len });
                match self.decoder.as_mut() {
                    Some(decoder) => decoder.gap(from, len, &mut decoded),
                    None => return,
                }
            }
        }
        self.decoded(decoded, out);
    }

    /// Reports the protocol the decoder settled on, lets an opaque decoder go, then hands
    /// on what it produced.
    fn decoded(&mut self, decoded: Vec<EventKind>, out: &mut Vec<StreamEvent>) {
        let Some(decoder) = self.decoder.as_ref() else {
            return;
        };
        let protocol = decoder.protocol();
        if protocol != self.protocol {
            self.protocol = protocol;
            self.changed = true;
            out.push(StreamEvent::Protocol(protocol));
        }
        if decoder.is_opaque() {
            self.decoder = None;
            self.opaque = true;
        }
        out.extend(decoded.into_iter().map(StreamEvent::Decoded));
    }
}

#[cfg(test)]
mod tests;
