//! How a worker's events reach the pipeline: a tracked flow's [`Dispatch`] with its counters
//! and TCP unit, the unit's [`StreamEvent`]s delivered in order, `packet` events built only
//! when a stage wants them, and [`run`], which drives one pipeline call on the worker thread
//! (capture never waits on the network).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tapline_core::{
    block_on, Chunk, Dispatch, EventKind, Flow, FlowEnd, FlowStats, PacketInfo, Side, Timestamp,
};
use tapline_decode::packet::{IpPacket, Transport};

use crate::stats::CaptureStats;
use crate::tcp_unit::{StreamEvent, TcpUnit};

/// A flow as a worker keeps it in its flow table.
pub(crate) struct Tracked {
    /// The flow and the plugin contract for it.
    pub dispatch: Dispatch,
    /// Its totals, for `flow_end`.
    pub stats: FlowStats,
    /// The stream of a TCP flow; `None` for UDP.
    pub tcp: Option<Box<TcpUnit>>,
}

impl Tracked {
    /// A flow whose `flow_start` went out through `dispatch`.
    pub(crate) fn new(dispatch: Dispatch, tcp: Option<Box<TcpUnit>>) -> Self {
        Tracked {
            dispatch,
            stats: FlowStats::default(),
            tcp,
        }
    }

    /// Which end sent a packet from `src`.
    pub(crate) fn side_of(&self, src: SocketAddr) -> Side {
        if src == self.dispatch.flow().client {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// The flow's `packet` event, built only when a stage wants packets.
    pub(crate) fn packet(&self, ts: Timestamp, len: u32, frame: &[u8], ip: &IpPacket<'_>) {
        if self.dispatch.interest().packets {
            let info = packet_info(len, frame, Some(ip));
            run(self.dispatch.event(ts, EventKind::Packet(info)));
        }
    }

    /// A UDP datagram's payload from `from`: a `chunk` event when one is wanted.
    pub(crate) fn datagram(&self, ts: Timestamp, from: Side, payload: &[u8]) {
        if !payload.is_empty() && self.dispatch.wants_chunks() {
            let chunk = Chunk {
                from,
                data: Bytes::copy_from_slice(payload),
            };
            run(self.dispatch.chunk(ts, chunk));
        }
    }

    /// Delivers what the flow's TCP unit produced, in order: bytes are counted (here and in
    /// `stats`) and go out as chunks when wanted, a protocol change updates the flow (and so
    /// what the stages want of it), decoded events go through their hooks.
    pub(crate) fn deliver(
        &mut self,
        ts: Timestamp,
        events: &mut Vec<StreamEvent>,
        stats: &mut CaptureStats,
    ) {
        for event in events.drain(..) {
            match event {
                StreamEvent::Data { from, len, bytes } => {
                    let n = len as u64;
                    match from {
                        Side::Client => self.stats.bytes_from_client += n,
                        Side::Server => self.stats.bytes_from_server += n,
                    }
                    stats.stream_bytes += n;
                    if let Some(data) = bytes.filter(|_| self.dispatch.wants_chunks()) {
                        run(self.dispatch.chunk(ts, Chunk { from, data }));
                    }
                }
                StreamEvent::Gap { from, len } => {
                    run(self.dispatch.event(ts, EventKind::Gap { from, len }));
                }
                StreamEvent::Protocol(protocol) => {
                    let mut flow = Flow::clone(self.dispatch.flow());
                    flow.protocol = protocol;
                    self.dispatch.set_flow(Arc::new(flow));
                }
                StreamEvent::Decoded(kind) => run(self.dispatch.decoded(ts, kind)),
            }
        }
    }

    /// The flow's `flow_end`, at `at` (its last time), with its totals.
    pub(crate) fn ended(&self, at: Timestamp, end: FlowEnd) {
        let kind = EventKind::FlowEnd {
            stats: self.stats,
            end,
            duration: at.since(self.dispatch.flow().started),
        };
        run(self.dispatch.event(at, kind));
    }
}

/// Drives a pipeline call to its end on this thread. In-process stages and sinks finish on
/// the first poll, which needs no waker; only a call that waits (a remote stage's queue)
/// goes on with [`block_on`], whose poll registers a real waker.
pub(crate) fn run<F: Future>(call: F) -> F::Output {
    let mut call = pin!(call);
    let mut cx = Context::from_waker(Waker::noop());
    match call.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => block_on(call),
    }
}

/// A packet event's summary; the payload shares the frame's bytes.
pub(crate) fn packet_info(len: u32, frame: &[u8], ip: Option<&IpPacket<'_>>) -> PacketInfo {
    let data = Bytes::copy_from_slice(frame);
    let mut info = PacketInfo {
        len,
        caplen: frame.len() as u32,
        ..PacketInfo::default()
    };
    if let Some(ip) = ip {
        let payload = ip.transport.payload();
        let at = (payload.as_ptr() as usize).saturating_sub(frame.as_ptr() as usize);
        info.payload = data.slice(at.min(data.len())..(at + payload.len()).min(data.len()));
        info.src = Some(ip.src);
        info.dst = Some(ip.dst);
        (info.sport, info.dport) = ip.transport.ports();
        info.proto = ip.transport.name();
        if let Transport::Tcp(t) = ip.transport {
            info.tcp_flags = t.flags;
        }
    }
    info.data = data;
    info
}
