//! A capture worker: the driver of its share of the flows. It takes batches, decodes
//! link/IP/TCP/UDP, asks the [`FlowTable`] where each packet goes, feeds TCP segments to the
//! flow's [`TcpUnit`] and hands what comes out to the flow's [`Tracked`] entry, whose
//! [`Dispatch`](tapline_core::Dispatch) delivers it, in order per flow (capture-mode
//! verdicts are observed and counted there, never applied).

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use tapline_core::{
    Event, EventKind, Flow, FlowEnd, FlowIds, Mode, Pipeline, Protocol, Route, Timestamp,
};
use tapline_decode::packet::{self, Decoded, IpPacket, LinkType, TcpHeader, Transport};
use tapline_decode::reassembly::{Budget, Closed, Segment};
use tapline_decode::DecodeConfig;

use crate::batch::Batch;
use crate::delivery::{packet_info, run, Tracked};
use crate::flow_table::{Ending, FlowKey, FlowTable, Opening, Place};
use crate::stats::CaptureStats;
use crate::tcp_unit::{Env, StreamEvent, TcpUnit};

/// Settings shared by every worker of a run.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// How frames are decoded; `None` for link types tapline does not decode.
    pub link: Option<LinkType>,
    /// Idle time (packet time) after which a flow ends.
    pub flow_timeout: Duration,
    /// Flows this worker may track at once.
    pub max_flows: usize,
    /// Out-of-order bytes one direction of a flow may buffer.
    pub max_flow_buffer: usize,
    /// Out-of-order bytes this worker may buffer over all its flows.
    pub max_buffer: usize,
    /// How flows are decoded, as the run was configured.
    pub decode: DecodeConfig,
}

/// One worker thread's state.
pub(crate) struct Worker<'a> {
    pipeline: &'a Pipeline,
    ids: &'a FlowIds,
    link: Option<LinkType>,
    table: FlowTable<Tracked>,
    budget: Budget,
    stats: CaptureStats,
    /// What the last TCP unit call produced, on its way out (kept for its capacity).
    events: Vec<StreamEvent>,
    /// Some stage wants packets that belong to no flow.
    loose_packets: bool,
    /// The run's decoding settings, with message details off when nothing reads them.
    decode: DecodeConfig,
}

impl<'a> Worker<'a> {
    /// A worker feeding `pipeline`, with flow ids from the run's `ids`.
    pub(crate) fn new(pipeline: &'a Pipeline, ids: &'a FlowIds, config: &'a WorkerConfig) -> Self {
        Worker {
            pipeline,
            ids,
            link: config.link,
            table: FlowTable::new(config.flow_timeout, config.max_flows),
            budget: Budget::new(config.max_flow_buffer, config.max_buffer),
            stats: CaptureStats::default(),
            events: Vec::new(),
            loose_packets: pipeline.wants_loose_packets(),
            decode: config.decode.for_pipeline(pipeline),
        }
    }

    /// Takes batches until the reader hangs up, then ends every flow still open.
    pub(crate) fn run(mut self, batches: Receiver<Batch>, recycle: Sender<Batch>) -> CaptureStats {
        while let Ok(mut batch) = batches.recv() {
            for (record, frame) in batch.packets() {
                let link = if record.reassembled {
                    Some(LinkType::Raw)
                } else {
                    self.link
                };
                self.packet(link, record.ts, record.len, frame);
            }
            self.advance(batch.now);
            batch.clear();
            let _ = recycle.send(batch);
        }
        self.finish()
    }

    /// Ends every open flow (end of capture), in id order, and returns the counters.
    fn finish(mut self) -> CaptureStats {
        for key in self.table.open_keys() {
            if let Some(ending) = self.table.remove(&key, FlowEnd::Shutdown) {
                self.end(ending);
            }
        }
        self.stats.reassembly = self.budget.counters;
        self.stats
    }

    /// Moves this worker's clock (packet time); flows the table found idle end.
    fn advance(&mut self, ts: Timestamp) {
        for ending in self.table.advance(ts) {
            self.end(ending);
        }
    }

    /// One captured frame of link type `link` (`None`: not decoded) and wire length `len`.
    fn packet(&mut self, link: Option<LinkType>, ts: Timestamp, len: u32, frame: &[u8]) {
        self.advance(ts);
        let Some(link) = link else {
            self.stats.skipped.unsupported_link += 1;
            return self.loose_packet(ts, len, frame, None);
        };
        match packet::decode(link, frame) {
            Decoded::Ip(ip) => match ip.transport {
                Transport::Tcp(tcp) => self.tcp(ts, len, frame, &ip, &tcp),
                Transport::Udp {
                    sport,
                    dport,
                    payload,
                } => {
                    let ends = (
                        SocketAddr::new(ip.src, sport),
                        SocketAddr::new(ip.dst, dport),
                    );
                    self.udp(ts, (len, frame), &ip, ends, payload);
                }
                _ => self.loose_packet(ts, len, frame, Some(&ip)),
            },
            // Fragments were reassembled by the reader; one here is a datagram whose
            // reassembly left it fragmented, which no sender produces.
            Decoded::Fragment => {
                self.stats.skipped.malformed += 1;
                self.loose_packet(ts, len, frame, None);
            }
            Decoded::NotIp => {
                self.stats.skipped.not_ip += 1;
                self.loose_packet(ts, len, frame, None);
            }
            Decoded::Malformed if (frame.len() as u64) < u64::from(len) => {
                self.stats.skipped.truncated += 1;
                self.loose_packet(ts, len, frame, None);
            }
            Decoded::Malformed => {
                self.stats.skipped.malformed += 1;
                self.loose_packet(ts, len, frame, None);
            }
        }
    }

    fn tcp(&mut self, ts: Timestamp, len: u32, frame: &[u8], ip: &IpPacket<'_>, t: &TcpHeader<'_>) {
        let ends = (
            SocketAddr::new(ip.src, t.sport),
            SocketAddr::new(ip.dst, t.dport),
        );
        let key = FlowKey::new(ends.0, ends.1, 6);
        match self.table.tcp(key, ends, t.flags, t.seq, ts) {
            Place::Open => {}
            Place::Straggler => return self.loose_packet(ts, len, frame, Some(ip)),
            Place::Start { opening, replaced } => {
                if let Some(ending) = replaced {
                    self.end(ending);
                }
                self.start(key, opening, Protocol::Tcp);
            }
        }
        let Some(flow) = self.table.open_mut(&key) else {
            return;
        };
        let side = flow.side_of(ends.0);
        flow.stats.add(side, 0);
        flow.packet(ts, len, frame, ip);
        let Some(unit) = flow.tcp.as_mut() else {
            return;
        };
        let segment = Segment {
            seq: t.seq,
            ack: t.ack,
            flags: t.flags,
            payload: t.payload,
        };
        let mut env = Env {
            budget: &mut self.budget,
            decode: &self.decode,
            chunks: flow.dispatch.wants_chunks(),
        };
        unit.segment(side, &segment, ts, &mut env, &mut self.events);
        let closed = unit.closed();
        flow.deliver(ts, &mut self.events, &mut self.stats);
        if let Some(closed) = closed {
            let end = match closed {
                Closed::Fin => FlowEnd::Fin,
                Closed::Rst => FlowEnd::Rst,
            };
            if let Some(ending) = self.table.close(&key, end) {
                self.end(ending);
            }
        }
    }

    fn udp(
        &mut self,
        ts: Timestamp,
        (len, frame): (u32, &[u8]),
        ip: &IpPacket<'_>,
        ends: (SocketAddr, SocketAddr),
        payload: &[u8],
    ) {
        let key = FlowKey::new(ends.0, ends.1, 17);
        if let Place::Start { opening, .. } = self.table.udp(key, ends, ts) {
            self.start(key, opening, Protocol::Udp);
        }
        let Some(flow) = self.table.open_mut(&key) else {
            return;
        };
        let side = flow.side_of(ends.0);
        flow.stats.add(side, payload.len());
        self.stats.stream_bytes += payload.len() as u64;
        flow.packet(ts, len, frame, ip);
        flow.datagram(ts, side, payload);
    }

    /// Starts the flow the table opened: room is made first (evicted flows end), then its
    /// `flow_start` goes out and the table tracks it.
    fn start(&mut self, key: FlowKey, opening: Opening, protocol: Protocol) {
        for ending in self.table.make_room() {
            self.stats.flows_evicted += 1;
            self.end(ending);
        }
        let flow = Arc::new(Flow::new(
            self.ids.next_id(),
            Mode::Capture,
            protocol,
            Route::Capture,
            opening.client,
            opening.server,
            opening.started,
        ));
        self.stats.flows += 1;
        let dispatch = self.pipeline.dispatch(&flow);
        run(dispatch.event(opening.started, EventKind::FlowStart));
        let tcp = (protocol == Protocol::Tcp)
            .then(|| Box::new(TcpUnit::new(opening.client.port(), opening.server.port())));
        self.table
            .insert(key, flow.id, opening, Tracked::new(dispatch, tcp));
    }

    /// Ends a flow the table let go of: its stream is finished (open holes become gaps, the
    /// decoder flushes), then `flow_end` goes out.
    fn end(&mut self, ending: Ending<Tracked>) {
        let Ending {
            state: mut flow,
            end,
            at,
        } = ending;
        if let Some(unit) = flow.tcp.as_mut() {
            let mut env = Env {
                budget: &mut self.budget,
                decode: &self.decode,
                chunks: flow.dispatch.wants_chunks(),
            };
            unit.finish(at, &mut env, &mut self.events);
            flow.deliver(at, &mut self.events, &mut self.stats);
        }
        flow.ended(at, end);
    }

    /// A packet outside any flow (ICMP, non-IP, stragglers): only stages that
    /// asked see it.
    fn loose_packet(&mut self, ts: Timestamp, len: u32, frame: &[u8], ip: Option<&IpPacket<'_>>) {
        if !self.loose_packets {
            return;
        }
        let event = Event {
            ts,
            mode: Mode::Capture,
            flow: None,
            kind: EventKind::Packet(packet_info(len, frame, ip)),
        };
        run(self.pipeline.loose_packet(event));
    }
}
