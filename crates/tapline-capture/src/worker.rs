//! A capture worker: decodes the packets of its flows, reassembles TCP, runs each flow's
//! [`FlowDecoder`] and delivers every event to the pipeline, in order per flow.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use tapline_core::{
    block_on, Chunk, Event, EventKind, Flow, FlowEnd, FlowIds, FlowStats, Interest, Mode,
    PacketInfo, Pipeline, Protocol, Route, Side, Timestamp,
};
use tapline_decode::packet::{self, tcp_flags, Decoded, IpPacket, LinkType, TcpHeader, Transport};
use tapline_decode::reassembly::{Budget, Closed, Delivery, Segment, TcpReassembler};
use tapline_decode::{DecodeConfig, FlowDecoder};

use crate::batch::Batch;
use crate::flows::{guess_client, oldest, Entry, FlowKey, FlowMap, FlowState, TcpState};
use crate::stats::CaptureStats;

/// Longest an ended flow is remembered (to absorb its last ACKs) when idle.
const ENDED_LINGER: Duration = Duration::from_secs(30);

/// Longest time between two sweeps for idle flows, in packet time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Settings shared by every worker of a run.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// How frames are decoded; `None` for link types tapline does not decode.
    pub link: Option<LinkType>,
    pub flow_timeout: Duration,
    /// Flows this worker may track at once.
    pub max_flows: usize,
    /// Out-of-order bytes one direction of a flow may buffer.
    pub max_flow_buffer: usize,
    /// Out-of-order bytes this worker may buffer over all its flows.
    pub max_buffer: usize,
    pub decode: DecodeConfig,
}

/// One worker thread's state.
pub(crate) struct Worker<'a> {
    pipeline: &'a Pipeline,
    ids: &'a FlowIds,
    config: &'a WorkerConfig,
    flows: FlowMap,
    budget: Budget,
    stats: CaptureStats,
    events: Vec<EventKind>,
    now: Timestamp,
    next_sweep: Option<Timestamp>,
    /// Some stage wants packets that belong to no flow.
    loose_packets: bool,
    sink_chunks: bool,
    /// The run's decoding settings, with message details off when nothing reads them.
    decode: DecodeConfig,
}

/// What stream deliveries need besides the flow itself.
struct Ctx<'w> {
    pipeline: &'w Pipeline,
    events: &'w mut Vec<EventKind>,
    stats: &'w mut CaptureStats,
    decode: &'w DecodeConfig,
    sink_chunks: bool,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(pipeline: &'a Pipeline, ids: &'a FlowIds, config: &'a WorkerConfig) -> Self {
        Worker {
            pipeline,
            ids,
            config,
            flows: FlowMap::default(),
            budget: Budget::new(config.max_flow_buffer, config.max_buffer),
            stats: CaptureStats::default(),
            events: Vec::new(),
            now: Timestamp::default(),
            next_sweep: None,
            loose_packets: pipeline.stages().iter().any(|s| s.wants_packets()),
            sink_chunks: pipeline.sink().wants_chunks(),
            decode: decode_config(pipeline, &config.decode),
        }
    }

    /// Takes batches until the reader hangs up, then ends every flow still open.
    pub(crate) fn run(mut self, batches: Receiver<Batch>, recycle: Sender<Batch>) -> CaptureStats {
        while let Ok(mut batch) = batches.recv() {
            for (record, frame) in batch.packets() {
                self.packet(record.ts, record.len, frame);
            }
            self.advance(batch.now);
            batch.clear();
            let _ = recycle.send(batch);
        }
        self.finish()
    }

    /// Ends every open flow (end of capture) and returns the counters.
    pub(crate) fn finish(mut self) -> CaptureStats {
        let mut open: Vec<(u64, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, e)| !e.is_ended())
            .map(|(k, e)| (e.flow.id.0, *k))
            .collect();
        open.sort_unstable_by_key(|(id, _)| *id);
        for (_, key) in open {
            self.end_flow(&key, FlowEnd::Shutdown, false);
        }
        self.stats.reassembly = self.budget.counters;
        self.stats
    }

    /// One captured frame of wire length `len`.
    pub(crate) fn packet(&mut self, ts: Timestamp, len: u32, frame: &[u8]) {
        self.advance(ts);
        let Some(link) = self.config.link else {
            self.stats.not_ip += 1;
            return self.loose_packet(ts, len, frame, None);
        };
        match packet::decode(link, frame) {
            Decoded::Ip(ip) => match ip.transport {
                Transport::Tcp(tcp) => self.tcp(ts, len, frame, &ip, &tcp),
                Transport::Udp {
                    sport,
                    dport,
                    payload,
                } => self.udp(
                    ts,
                    len,
                    frame,
                    &ip,
                    SocketAddr::new(ip.src, sport),
                    SocketAddr::new(ip.dst, dport),
                    payload,
                ),
                _ => self.loose_packet(ts, len, frame, Some(&ip)),
            },
            Decoded::Fragment => {
                self.stats.fragments += 1;
                self.loose_packet(ts, len, frame, None);
            }
            Decoded::NotIp => {
                self.stats.not_ip += 1;
                self.loose_packet(ts, len, frame, None);
            }
            Decoded::Malformed => {
                self.stats.malformed += 1;
                self.loose_packet(ts, len, frame, None);
            }
        }
    }

    /// Moves this worker's clock (packet time) and ends idle flows when a sweep is due.
    pub(crate) fn advance(&mut self, ts: Timestamp) {
        if ts > self.now {
            self.now = ts;
        }
        match self.next_sweep {
            None => self.next_sweep = Some(self.sweep_after()),
            Some(due) if self.now >= due => self.sweep(),
            Some(_) => {}
        }
    }

    fn sweep_after(&self) -> Timestamp {
        let every = (self.config.flow_timeout / 2).clamp(Duration::from_millis(1), SWEEP_EVERY);
        Timestamp(self.now.0.saturating_add(every.as_micros() as i64))
    }

    fn sweep(&mut self) {
        let now = self.now;
        let timeout = self.config.flow_timeout;
        let linger = timeout.min(ENDED_LINGER);
        let mut forget = Vec::new();
        let mut idle = Vec::new();
        for (key, entry) in &self.flows {
            let quiet = now.since(entry.last_seen);
            if entry.is_ended() {
                if quiet >= linger {
                    forget.push(*key);
                }
            } else if quiet >= timeout {
                idle.push((entry.flow.id.0, *key));
            }
        }
        for key in forget {
            self.flows.remove(&key);
        }
        idle.sort_unstable_by_key(|(id, _)| *id);
        for (_, key) in idle {
            self.end_flow(&key, FlowEnd::Timeout, false);
        }
        self.next_sweep = Some(self.sweep_after());
    }

    /// Makes room for one more flow: forgets ended flows, then ends the longest idle ones.
    fn make_room(&mut self) {
        if self.flows.len() < self.config.max_flows.max(1) {
            return;
        }
        let n = (self.config.max_flows / 64).max(1);
        for key in oldest(&self.flows, n) {
            let ended = self.flows.get(&key).is_some_and(Entry::is_ended);
            if ended {
                self.flows.remove(&key);
            } else {
                self.stats.flows_evicted += 1;
                self.end_flow(&key, FlowEnd::Timeout, false);
            }
        }
    }

    fn split(&mut self) -> (&mut FlowMap, &mut Budget, Ctx<'_>) {
        (
            &mut self.flows,
            &mut self.budget,
            Ctx {
                pipeline: self.pipeline,
                events: &mut self.events,
                stats: &mut self.stats,
                decode: &self.decode,
                sink_chunks: self.sink_chunks,
            },
        )
    }

    fn start_flow(
        &mut self,
        key: FlowKey,
        ends: (SocketAddr, SocketAddr),
        ts: Timestamp,
        tcp: bool,
    ) {
        self.make_room();
        let (client, server) = ends;
        let flow = Arc::new(Flow {
            id: self.ids.next_id(),
            mode: Mode::Capture,
            protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
            route: Route::Capture,
            client,
            server,
            started: ts,
        });
        let state = if tcp {
            FlowState::Tcp(Box::new(TcpState {
                reassembler: TcpReassembler::new(),
                decoder: None,
                decoder_done: false,
                client_isn: None,
            }))
        } else {
            FlowState::Udp
        };
        self.stats.flows += 1;
        let entry = Entry {
            interest: self.pipeline.interest(&flow),
            flow,
            last_seen: ts,
            stats: FlowStats::default(),
            state,
        };
        deliver(self.pipeline, &entry.flow, ts, EventKind::FlowStart);
        self.flows.insert(key, entry);
    }

    fn tcp(&mut self, ts: Timestamp, len: u32, frame: &[u8], ip: &IpPacket<'_>, t: &TcpHeader<'_>) {
        let src = SocketAddr::new(ip.src, t.sport);
        let dst = SocketAddr::new(ip.dst, t.dport);
        let key = FlowKey::new(src, dst, 6);
        let syn_only = t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        let new_connection = match self.flows.get_mut(&key) {
            None => true,
            Some(e) if e.is_ended() => {
                if !syn_only {
                    // A straggler (the last ACK): the flow is over, so it is a loose packet.
                    e.last_seen = ts;
                    return self.loose_packet(ts, len, frame, Some(ip));
                }
                true
            }
            Some(e) => syn_only && is_new_isn(e, src, t.seq),
        };
        if new_connection {
            if self.flows.get(&key).is_some_and(|e| !e.is_ended()) {
                self.end_flow(&key, FlowEnd::Timeout, false);
            }
            self.flows.remove(&key);
            let client = if syn_only {
                src
            } else if t.flags & tcp_flags::SYN != 0 {
                dst
            } else {
                guess_client(src, dst)
            };
            let server = if client == src { dst } else { src };
            self.start_flow(key, (client, server), ts, true);
        }
        let (flows, budget, mut ctx) = self.split();
        let Some(entry) = flows.get_mut(&key) else {
            return;
        };
        let side = entry.side_of(src);
        entry.last_seen = ts;
        entry.stats.add(side, 0);
        if entry.interest.packets {
            let info = packet_info(len, frame, Some(ip));
            deliver(ctx.pipeline, &entry.flow, ts, EventKind::Packet(info));
        }
        let Entry {
            flow,
            stats,
            interest,
            state,
            ..
        } = entry;
        let FlowState::Tcp(tcp) = state else {
            return;
        };
        if syn_only && side == Side::Client {
            tcp.client_isn = Some(t.seq);
        }
        let TcpState {
            reassembler,
            decoder,
            decoder_done,
            ..
        } = &mut **tcp;
        let segment = Segment {
            seq: t.seq,
            ack: t.ack,
            flags: t.flags,
            payload: t.payload,
        };
        let mut stream = Stream {
            ctx: &mut ctx,
            flow,
            stats,
            interest,
            decoder,
            decoder_done,
            ts,
        };
        reassembler.segment(side, &segment, budget, &mut |d| stream.take(d));
        let closed = reassembler.closed();
        if let Some(closed) = closed {
            let end = match closed {
                Closed::Fin => FlowEnd::Fin,
                Closed::Rst => FlowEnd::Rst,
            };
            self.end_flow(&key, end, true);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn udp(
        &mut self,
        ts: Timestamp,
        len: u32,
        frame: &[u8],
        ip: &IpPacket<'_>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) {
        let key = FlowKey::new(src, dst, 17);
        if !self.flows.contains_key(&key) {
            let client = guess_client(src, dst);
            let server = if client == src { dst } else { src };
            self.start_flow(key, (client, server), ts, false);
        }
        let (flows, _, ctx) = self.split();
        let Some(entry) = flows.get_mut(&key) else {
            return;
        };
        let side = entry.side_of(src);
        entry.last_seen = ts;
        entry.stats.add(side, payload.len());
        ctx.stats.stream_bytes += payload.len() as u64;
        if entry.interest.packets {
            let info = packet_info(len, frame, Some(ip));
            deliver(ctx.pipeline, &entry.flow, ts, EventKind::Packet(info));
        }
        if !payload.is_empty() && (entry.interest.chunks || ctx.sink_chunks) {
            let chunk = Chunk {
                from: side,
                data: Bytes::copy_from_slice(payload),
            };
            deliver(ctx.pipeline, &entry.flow, ts, EventKind::Chunk(chunk));
        }
    }

    /// A packet outside any flow (ICMP, fragments, non-IP): only stages that asked see it.
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
        run(self.pipeline.deliver(event));
    }

    /// Ends a flow: open holes become gaps, the decoder flushes, `flow_end` goes out. The
    /// entry stays as an ended marker when `remember`, else it is forgotten.
    fn end_flow(&mut self, key: &FlowKey, end: FlowEnd, remember: bool) {
        let (flows, budget, mut ctx) = self.split();
        let Some(entry) = flows.get_mut(key) else {
            return;
        };
        if entry.is_ended() {
            return;
        }
        let ts = entry.last_seen;
        let Entry {
            flow,
            stats,
            interest,
            state,
            ..
        } = entry;
        if let FlowState::Tcp(tcp) = state {
            let TcpState {
                reassembler,
                decoder,
                decoder_done,
                ..
            } = &mut **tcp;
            let mut stream = Stream {
                ctx: &mut ctx,
                flow,
                stats,
                interest,
                decoder,
                decoder_done,
                ts,
            };
            reassembler.finish(budget, &mut |d| stream.take(d));
            stream.finish();
        }
        let kind = EventKind::FlowEnd {
            stats: *stats,
            end,
            duration: ts.since(flow.started),
        };
        deliver(ctx.pipeline, flow, ts, kind);
        entry.state = FlowState::Ended;
        if !remember {
            flows.remove(key);
        }
    }
}

/// A SYN from the client with another initial sequence number: the ports were reused.
fn is_new_isn(entry: &Entry, src: SocketAddr, seq: u32) -> bool {
    match &entry.state {
        FlowState::Tcp(tcp) => {
            src == entry.flow.client && tcp.client_isn.is_some_and(|isn| isn != seq)
        }
        _ => false,
    }
}

/// The run's decoding settings, with the details of `kind` events off when no stage (any
/// stage may observe them) and no sink reads them.
fn decode_config(pipeline: &Pipeline, decode: &DecodeConfig) -> DecodeConfig {
    let read = |kind| !pipeline.stages().is_empty() || pipeline.sink().wants_details(kind);
    DecodeConfig {
        message_fields: decode.message_fields && read("message"),
        transaction_heads: decode.transaction_heads && read("transaction"),
        ..decode.clone()
    }
}

fn deliver(pipeline: &Pipeline, flow: &Arc<Flow>, ts: Timestamp, kind: EventKind) {
    run(pipeline.deliver(Event::on_flow(flow, ts, kind)));
}

/// Drives a pipeline call to its end on this thread. In-process stages and sinks finish on
/// the first poll, which needs no waker; only a call that waits (a remote stage's queue)
/// goes on with [`block_on`], whose poll registers a real waker.
fn run<F: Future<Output = ()>>(call: F) {
    let mut call = pin!(call);
    let mut cx = Context::from_waker(Waker::noop());
    if call.as_mut().poll(&mut cx).is_pending() {
        block_on(call);
    }
}

/// The reassembled bytes of one flow on their way to chunks, the decoder and its events.
struct Stream<'s, 'w> {
    ctx: &'s mut Ctx<'w>,
    flow: &'s mut Arc<Flow>,
    stats: &'s mut FlowStats,
    interest: &'s mut Interest,
    decoder: &'s mut Option<Box<FlowDecoder>>,
    decoder_done: &'s mut bool,
    ts: Timestamp,
}

impl Stream<'_, '_> {
    fn take(&mut self, delivery: Delivery<'_>) {
        match delivery {
            Delivery::Data { from, data } => {
                let n = data.len() as u64;
                match from {
                    Side::Client => self.stats.bytes_from_client += n,
                    Side::Server => self.stats.bytes_from_server += n,
                }
                self.ctx.stats.stream_bytes += n;
                if self.interest.chunks || self.ctx.sink_chunks {
                    let chunk = Chunk {
                        from,
                        data: Bytes::copy_from_slice(data),
                    };
                    deliver(
                        self.ctx.pipeline,
                        self.flow,
                        self.ts,
                        EventKind::Chunk(chunk),
                    );
                }
                if *self.decoder_done {
                    return;
                }
                let decode = self.ctx.decode;
                let (client, server) = (self.flow.client.port(), self.flow.server.port());
                let decoder = self.decoder.get_or_insert_with(|| {
                    Box::new(FlowDecoder::for_ports(client, server, decode))
                });
                decoder.feed(from, self.ts, data, self.ctx.events);
                self.decoded();
            }
            Delivery::Gap { from, len } => {
                deliver(
                    self.ctx.pipeline,
                    self.flow,
                    self.ts,
                    EventKind::Gap { from, len },
                );
                if let Some(decoder) = self.decoder.as_mut() {
                    decoder.gap(from, len, self.ctx.events);
                    self.decoded();
                }
            }
        }
    }

    /// The flow is over: the decoder flushes what it holds.
    fn finish(&mut self) {
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.finish(self.ts, self.ctx.events);
            self.decoded();
        }
    }

    /// Takes the protocol the decoder settled on, then delivers what it produced.
    fn decoded(&mut self) {
        let Some(decoder) = self.decoder.as_ref() else {
            return;
        };
        let protocol = decoder.protocol();
        if protocol != self.flow.protocol {
            let mut flow = Flow::clone(self.flow);
            flow.protocol = protocol;
            *self.flow = Arc::new(flow);
            *self.interest = self.ctx.pipeline.interest(self.flow);
        }
        if decoder.is_opaque() {
            *self.decoder = None;
            *self.decoder_done = true;
        }
        let pipeline = self.ctx.pipeline;
        for kind in self.ctx.events.drain(..) {
            let staged = match kind {
                EventKind::HttpRequest(_) => self.interest.requests,
                EventKind::HttpResponse(_) => self.interest.responses,
                _ => self.interest.observe,
            };
            let event = Event::on_flow(self.flow, self.ts, kind);
            if staged {
                run(pipeline.deliver(event));
            } else {
                // No stage looks at it: straight to the sink, as the pipeline would.
                pipeline.emit(&event);
            }
        }
    }
}

/// A packet event's summary; the payload shares the frame's bytes.
fn packet_info(len: u32, frame: &[u8], ip: Option<&IpPacket<'_>>) -> PacketInfo {
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
