//! The capture driver: the reader loop on the calling thread, sharding packets by flow hash
//! into batches for the worker threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcap::Activated;
use tapline_core::{FlowIds, Pipeline, Timestamp};
use tapline_decode::defrag::{DefragLimits, Defragmenter};
use tapline_decode::packet::{self, LinkType, Steer};
use tapline_decode::DecodeConfig;

use crate::batch::Batch;
use crate::error::{pcap_message, CaptureError};
use crate::savefile::{Interface, Record, Savefiles, WriteConfig};
use crate::source::{Source, SourceSpec, LIVE_READ_TIMEOUT};
use crate::stats::{CaptureStats, KernelStats, LiveStats};
use crate::worker::{Worker, WorkerConfig};

/// Batches queued per worker before the reader waits (bounded memory, backpressure).
const QUEUE_DEPTH: usize = 8;

/// Live capture: longest a packet waits in a partly filled batch.
const LIVE_FLUSH: Duration = Duration::from_millis(20);

/// Live capture: how long the reader sleeps when the kernel has no packet for it.
const LIVE_IDLE_SLEEP: Duration = Duration::from_millis(1);

/// Live capture: how often idle workers are told the time (so flows still time out).
const LIVE_IDLE_TICK: Duration = Duration::from_millis(100);

/// Live capture: how long the reader goes on after a stop, so the packets the kernel still
/// held in a block (handed on after [`LIVE_READ_TIMEOUT`]) are read too.
const LIVE_DRAIN: Duration = LIVE_READ_TIMEOUT.saturating_add(Duration::from_millis(50));

/// How many packets pass between two updates of the live counters.
const LIVE_PUBLISH_EVERY: u64 = 1024;

/// The snap length written in `-w` files copied from a file (libpcap's largest).
const FILE_SNAPLEN: u32 = 262_144;

/// Packet time between two ticks sent to every worker (idle workers still time flows out).
const TICK: i64 = 1_000_000;
/// Fragmented datagrams inside reassembled fragmented datagrams (tunnels) followed.
const MAX_NESTED_FRAGMENTS: usize = 4;

/// Memory and time bounds of the flow tables.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most flows tracked at once, over all workers.
    pub max_flows: usize,
    /// Most out-of-order bytes buffered, over all workers.
    pub max_buffer: u64,
    /// A flow idle this long (packet time) is ended.
    pub flow_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 200_000,
            max_buffer: 256 << 20,
            flow_timeout: Duration::from_secs(120),
        }
    }
}

/// Everything a capture run needs to know.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Where packets come from.
    pub source: SourceSpec,
    /// BPF filter.
    pub filter: Option<String>,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Write the captured (filtered) packets to pcap or pcapng files (`-w`).
    pub write: Option<WriteConfig>,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Flow table bounds.
    pub limits: Limits,
    /// Protocol decoding choices.
    pub decode: DecodeConfig,
}

/// An opened capture, ready to run: the source is open, the filter compiled and the `-w`
/// file created, so every configuration error shows before anything runs.
pub struct Capture {
    source: Source,
    writer: Option<Savefiles>,
    config: CaptureConfig,
    live: Arc<LiveStats>,
}

impl Capture {
    /// Opens the source, applies the filter and creates the `-w` file.
    pub fn open(config: CaptureConfig) -> Result<Capture, CaptureError> {
        let source = Source::open(&config.source, config.filter.as_deref())?;
        let writer = match &config.write {
            None => None,
            Some(write) => {
                let iface = Interface {
                    linktype: source.linktype(),
                    snaplen: match &config.source {
                        SourceSpec::Live(live) => live.snaplen.unsigned_abs(),
                        SourceSpec::File(_) => FILE_SNAPLEN,
                    },
                    name: match &config.source {
                        SourceSpec::Live(live) => Some(live.interface.clone()),
                        SourceSpec::File(_) => None,
                    },
                    filter: config.filter.clone().filter(|f| !f.trim().is_empty()),
                };
                Some(Savefiles::create(write.clone(), iface).map_err(|message| {
                    CaptureError::Write {
                        path: write.path.clone(),
                        message,
                    }
                })?)
            }
        };
        Ok(Capture {
            source,
            writer,
            config,
            live: Arc::default(),
        })
    }

    /// Counters kept current while the capture runs (for metrics).
    pub fn live_stats(&self) -> Arc<LiveStats> {
        self.live.clone()
    }

    /// The source's LINKTYPE_ number.
    pub fn linktype(&self) -> i32 {
        self.source.linktype()
    }

    /// libpcap's name of the source's link type (`EN10MB`, `USER0`, …), or its number.
    pub fn linktype_name(&self) -> String {
        let number = self.linktype();
        match pcap::Linktype(number).get_name() {
            Ok(name) => name,
            // libpcap names DLT_USER0..15 only when built with them.
            Err(_) if (147..=162).contains(&number) => format!("USER{}", number - 147),
            Err(_) => number.to_string(),
        }
    }

    /// Whether tapline decodes the source's link type (other frames are only counted).
    pub fn link_decoded(&self) -> bool {
        LinkType::from_linktype(self.linktype()).is_some()
    }

    /// Reads until the source ends, `count` packets, or `stop` is set; the events go to
    /// `pipeline`. A capture file that turns corrupt part-way is not an error: the packets
    /// before the bad record are delivered and [`RunOutcome::source_error`] says what broke.
    pub fn run(self, pipeline: &Pipeline, stop: &AtomicBool) -> Result<RunOutcome, CaptureError> {
        let Capture {
            mut source,
            writer,
            config,
            live,
        } = self;
        let link = LinkType::from_linktype(source.linktype());
        let workers = config.workers.max(1);
        let worker_config = WorkerConfig {
            link,
            flow_timeout: config.limits.flow_timeout,
            max_flows: (config.limits.max_flows / workers).max(1),
            max_flow_buffer: per_flow_buffer(config.limits.max_buffer / workers as u64),
            max_buffer: usize::try_from(config.limits.max_buffer / workers as u64)
                .unwrap_or(usize::MAX),
            decode: config.decode.clone(),
        };
        let ids = FlowIds::new();
        std::thread::scope(|scope| {
            let (recycle_tx, recycle_rx) = mpsc::channel();
            let mut senders = Vec::with_capacity(workers);
            let mut handles = Vec::with_capacity(workers);
            for i in 0..workers {
                let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE_DEPTH);
                let worker = Worker::new(pipeline, &ids, &worker_config);
                let recycle = recycle_tx.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("tapline-capture-{i}"))
                    .spawn_scoped(scope, move || worker.run(rx, recycle))
                    .map_err(|e| CaptureError::Thread(e.to_string()))?;
                senders.push(tx);
                handles.push(handle);
            }
            drop(recycle_tx);
            let mut dispatch = Dispatch::new(senders, recycle_rx, link);
            let mut outcome = RunOutcome::default();
            let (read, writer) = {
                let mut reader = Reader {
                    writer,
                    write_error: None,
                    file_limit: false,
                    count: config.count,
                    stop,
                    dispatch: &mut dispatch,
                    stats: &mut outcome.stats,
                    live: &live,
                };
                let read = match &mut source {
                    Source::Live(c) => reader.read(c, true),
                    Source::File(c) => reader.read(c, false),
                };
                outcome.write_error = reader.write_error;
                outcome.file_limit = reader.file_limit;
                (read, reader.writer)
            };
            dispatch.close();
            outcome.stats.defrag = dispatch.defrag.counters;
            live.publish(&outcome.stats);
            if let Source::Live(c) = &mut source {
                outcome.stats.kernel = kernel_stats(c);
                if let Some(k) = &outcome.stats.kernel {
                    live.publish_kernel(k);
                }
            }
            if let Some(w) = writer {
                if let Err(e) = w.close(outcome.stats.kernel) {
                    outcome.write_error.get_or_insert(e);
                }
            }
            let mut panicked = false;
            for handle in handles {
                match handle.join() {
                    Ok(stats) => outcome.stats.merge_worker(&stats),
                    Err(_) => panicked = true,
                }
            }
            if panicked {
                return Err(CaptureError::Thread("a capture worker panicked".into()));
            }
            outcome.source_error = read?;
            Ok(outcome)
        })
    }
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// What was seen and done.
    pub stats: CaptureStats,
    /// A capture file that turned unreadable part-way (corrupt or cut record): libpcap's
    /// message. The packets before it were processed.
    pub source_error: Option<String>,
    /// Writing a `-w` file failed (the first failure; nothing more was written).
    pub write_error: Option<String>,
    /// The run stopped because `-W` files were written with `-G`.
    pub file_limit: bool,
}

/// A quarter of a worker's buffer budget per flow direction, within 64 KiB..8 MiB.
fn per_flow_buffer(worker_budget: u64) -> usize {
    let quarter = (worker_budget / 4).clamp(64 << 10, 8 << 20);
    usize::try_from(quarter.min(worker_budget)).unwrap_or(usize::MAX)
}

/// The reader loop's state.
struct Reader<'r> {
    writer: Option<Savefiles>,
    write_error: Option<String>,
    file_limit: bool,
    count: Option<u64>,
    stop: &'r AtomicBool,
    dispatch: &'r mut Dispatch,
    stats: &'r mut CaptureStats,
    live: &'r LiveStats,
}

impl Reader<'_> {
    /// Reads packets until the end. `Ok(Some(message))`: a file turned unreadable.
    fn read<T: Activated + ?Sized>(
        &mut self,
        cap: &mut pcap::Capture<T>,
        live: bool,
    ) -> Result<Option<String>, CaptureError> {
        let mut drain_until: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) && drain_until.is_none() {
                if !live {
                    return Ok(None);
                }
                drain_until = Some(Instant::now() + LIVE_DRAIN);
            }
            if drain_until.is_some_and(|until| Instant::now() >= until) || self.rotate_if_due(cap) {
                return Ok(None);
            }
            match cap.next_packet() {
                Ok(packet) => {
                    // time_t and suseconds_t are i64 on the 64-bit Linux tapline targets.
                    let ts = Timestamp::from_secs_micros(
                        packet.header.ts.tv_sec,
                        packet.header.ts.tv_usec,
                    );
                    if let Some(w) = self.writer.as_mut() {
                        let record = Record {
                            micros: ts.0.max(0) as u64,
                            orig_len: packet.header.len,
                            data: packet.data,
                        };
                        if let Err(e) = w.write(&record) {
                            self.write_failed(e);
                        }
                    }
                    self.stats.packets += 1;
                    self.stats.bytes += packet.data.len() as u64;
                    self.dispatch.push(ts, packet.header.len, packet.data);
                    if self.stats.packets.is_multiple_of(LIVE_PUBLISH_EVERY) {
                        self.live.publish(self.stats);
                    }
                    if live && self.dispatch.last_flush.elapsed() >= LIVE_FLUSH {
                        self.dispatch.flush(false);
                    }
                    if self.count.is_some_and(|c| self.stats.packets >= c) {
                        return Ok(None);
                    }
                }
                Err(pcap::Error::TimeoutExpired) => {
                    // Nothing to read (non-blocking live capture): hand on what is batched,
                    // tell idle workers the time now and then, and wait a moment.
                    let tick = self.dispatch.last_flush.elapsed() >= LIVE_IDLE_TICK;
                    if tick {
                        self.dispatch.advance(Timestamp::now());
                        self.live.publish(self.stats);
                        if let Some(k) = kernel_stats(cap) {
                            self.live.publish_kernel(&k);
                        }
                        if let Some(Err(e)) = self.writer.as_mut().map(Savefiles::flush) {
                            self.write_failed(e);
                        }
                    }
                    if tick || self.dispatch.has_packets() {
                        self.dispatch.flush(tick);
                    }
                    std::thread::sleep(LIVE_IDLE_SLEEP);
                }
                Err(pcap::Error::NoMorePackets) => return Ok(None),
                Err(e) if !live => return Ok(Some(pcap_message(e))),
                Err(e) => return Err(CaptureError::Pcap(pcap_message(e))),
            }
        }
    }
}

impl Reader<'_> {
    /// Closes the `-w` file when its size or time is up (before the next packet, in this
    /// thread, so no packet is lost). True when `-G` with `-W` wrote its last file.
    fn rotate_if_due<T: Activated + ?Sized>(&mut self, cap: &mut pcap::Capture<T>) -> bool {
        let Some(w) = self.writer.as_mut().filter(|w| w.due()) else {
            return false;
        };
        let rotated = w.rotate(kernel_stats(cap));
        let finished = w.finished();
        if let Err(e) = rotated {
            self.write_failed(e);
        }
        self.file_limit = finished;
        finished
    }

    /// Stops writing after the first failure (disk full, directory gone), keeping why.
    fn write_failed(&mut self, error: String) {
        tracing::error!("-w: {error}; no more packets are written");
        self.writer = None;
        self.write_error.get_or_insert(error);
    }
}

/// Batches per worker, filled by flow hash and sent when full (or on time).
struct Dispatch {
    senders: Vec<SyncSender<Batch>>,
    batches: Vec<Batch>,
    recycle: Receiver<Batch>,
    link: Option<LinkType>,
    /// IP fragments wait here until their datagram is whole, since only the whole datagram
    /// says which flow (and so which worker) it belongs to.
    defrag: Defragmenter,
    now: Timestamp,
    last_tick: Timestamp,
    last_flush: Instant,
}

impl Dispatch {
    fn new(
        senders: Vec<SyncSender<Batch>>,
        recycle: Receiver<Batch>,
        link: Option<LinkType>,
    ) -> Self {
        Dispatch {
            batches: senders.iter().map(|_| Batch::with_capacity()).collect(),
            senders,
            recycle,
            link,
            defrag: Defragmenter::new(DefragLimits::default()),
            now: Timestamp::default(),
            last_tick: Timestamp::default(),
            last_flush: Instant::now(),
        }
    }

    /// Steers a frame to the worker that owns its flow; fragments are held until their
    /// datagram is whole, which then goes on in their place.
    fn push(&mut self, ts: Timestamp, len: u32, frame: &[u8]) {
        self.advance(ts);
        let Some(link) = self.link else {
            return self.push_to(0, ts, len, frame, false);
        };
        let ip = match packet::steer(link, frame) {
            Steer::Flow(hash) => return self.push_to(self.worker(hash), ts, len, frame, false),
            Steer::Fragment(ip) => ip,
        };
        let mut datagram = match self.defrag.push(ts, ip) {
            Some(d) => d,
            None => return self.tick(),
        };
        // The datagram may hold a tunnel whose inner packet is a fragment in turn.
        for _ in 0..MAX_NESTED_FRAGMENTS {
            let inner = match packet::steer(LinkType::Raw, &datagram) {
                Steer::Flow(hash) => {
                    let len = datagram.len() as u32;
                    return self.push_to(self.worker(hash), ts, len, &datagram, true);
                }
                Steer::Fragment(inner) => inner.to_vec(),
            };
            datagram = match self.defrag.push(ts, &inner) {
                Some(d) => d,
                None => return self.tick(),
            };
        }
    }

    fn worker(&self, hash: u64) -> usize {
        (hash % self.senders.len() as u64) as usize
    }

    fn push_to(&mut self, worker: usize, ts: Timestamp, len: u32, frame: &[u8], reassembled: bool) {
        self.batches[worker].push(ts, len, frame, reassembled);
        if self.batches[worker].is_full() {
            self.send(worker);
        }
        self.tick();
    }

    /// Every second of packet time, every worker hears the time (idle flows end).
    fn tick(&mut self) {
        if self.now.0.saturating_sub(self.last_tick.0) >= TICK {
            self.flush(true);
        }
    }

    fn advance(&mut self, ts: Timestamp) {
        if ts > self.now {
            self.now = ts;
        }
    }

    fn send(&mut self, worker: usize) {
        let fresh = self
            .recycle
            .try_recv()
            .unwrap_or_else(|_| Batch::with_capacity());
        let mut batch = std::mem::replace(&mut self.batches[worker], fresh);
        batch.now = self.now;
        // A worker that is gone has panicked; the run reports it when joining.
        let _ = self.senders[worker].send(batch);
    }

    /// Sends every non-empty batch; with `tick`, empty ones too, to carry the time.
    fn flush(&mut self, tick: bool) {
        for worker in 0..self.senders.len() {
            if tick || !self.batches[worker].is_empty() {
                self.send(worker);
            }
        }
        if tick {
            self.last_tick = self.now;
        }
        self.last_flush = Instant::now();
    }

    fn has_packets(&self) -> bool {
        self.batches.iter().any(|b| !b.is_empty())
    }

    /// Sends what is left and hangs up, so the workers finish. Datagrams still missing
    /// fragments count as timed out.
    fn close(&mut self) {
        self.defrag.expire(Timestamp(i64::MAX));
        self.flush(false);
        self.senders.clear();
    }
}

/// libpcap's kernel counters, when the source has them (live captures).
fn kernel_stats<T: Activated + ?Sized>(cap: &mut pcap::Capture<T>) -> Option<KernelStats> {
    cap.stats().ok().map(|s| KernelStats {
        received: u64::from(s.received),
        dropped: u64::from(s.dropped),
        if_dropped: u64::from(s.if_dropped),
    })
}
