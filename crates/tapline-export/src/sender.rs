//! The background sender of one target: a thread with its own small runtime that takes events
//! from the target's bounded queue in batches, publishes them and waits for the broker's
//! acknowledgements, with up to four batches on their way at once (so the broker stores one
//! while the next is sent).
//!
//! While the broker is away (unreachable at start, or a publish or acknowledgement failed)
//! the queue is moved to the spool, and the sender reconnects with exponential backoff
//! (0.1 s doubling to 5 s). Once connected it sends the spool, oldest segment first, before
//! the queue. A failed batch goes to the spool and is sent again: delivery is at-least-once,
//! and a redelivered event keeps its `event_id`. At a stop the sender keeps going until the
//! queue and the spool are empty or the flush deadline passes; what is left stays in the
//! spool for the next run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::broker::{BrokerError, Publisher, Settings};
use crate::spool::Spool;
use crate::target::Target;

/// Events per publish (one pipeline, then the acknowledgements).
pub const BATCH: usize = 2048;
/// Batches sent before the oldest one's acknowledgements are awaited.
const MAX_IN_FLIGHT: usize = 4;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for one batch's acknowledgements.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// One target's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events published (including ones sent again).
    pub sent: AtomicU64,
    /// Events the broker acknowledged.
    pub acked: AtomicU64,
    /// Events whose publish failed, to be sent again from the spool.
    pub retried: AtomicU64,
    /// Events written to the spool.
    pub spooled: AtomicU64,
    /// Events lost: deleted from a full spool, or not writable to it.
    pub dropped: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// What a target's sink and its sender share.
pub struct Shared {
    /// Where events go.
    pub target: Target,
    /// Broker settings.
    pub settings: Settings,
    /// Events waiting for the broker on disk.
    pub spool: Mutex<Spool>,
    /// Where the spool is, for messages.
    pub spool_dir: String,
    /// The target's counters.
    pub counters: Counters,
    /// Set at a stop.
    pub stopping: AtomicBool,
    /// Wakes the sender at a stop.
    pub stop: Notify,
    /// How long a stop may keep sending.
    pub flush_wait: Duration,
}

impl Shared {
    /// Writes payloads to the spool, counting them and whatever the bound dropped.
    pub fn spool(&self, payloads: &[Bytes]) {
        let mut spool = self.spool.lock();
        let mut dropped = 0;
        for p in payloads {
            dropped += spool.push(p);
        }
        if self.stopping.load(Ordering::Relaxed) {
            if let Err(e) = spool.sync() {
                tracing::warn!("export spool {}: {e}", self.spool_dir);
            }
        }
        drop(spool);
        add(&self.counters.spooled, payloads.len());
        self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
    }
}

/// Runs the sender on a thread of its own; the returned receiver yields once it is done.
pub fn spawn(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<std::sync::mpsc::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tapline-export".into())
        .spawn(move || {
            runtime.block_on(Sender::new(shared, rx).run());
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

struct Sender {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Bytes>,
    publisher: Option<Publisher>,
    /// Batches sent and not yet acknowledged, oldest first.
    in_flight: VecDeque<InFlight>,
    /// The newest spool segment sent (or on its way) since the last failure.
    sent_segment: Option<u64>,
    backoff: Duration,
    warned: bool,
    deadline: Option<Instant>,
}

/// A batch on its way to the broker.
struct InFlight {
    what: Sent,
    count: usize,
    acked: JoinHandle<Result<(), BrokerError>>,
}

/// A batch, and where it came from, to know what its acknowledgement settles.
enum Sent {
    /// From the queue: spooled if it fails.
    Queue(Vec<Bytes>),
    /// Part of a spool segment (still on disk); the last part's acknowledgement deletes it.
    Segment {
        id: u64,
        last: bool,
        part: Vec<Bytes>,
    },
}

impl Sent {
    fn payloads(&self) -> &[Bytes] {
        match self {
            Sent::Queue(batch) | Sent::Segment { part: batch, .. } => batch,
        }
    }
}

impl Sender {
    fn new(shared: Arc<Shared>, rx: mpsc::Receiver<Bytes>) -> Self {
        Sender {
            shared,
            rx,
            publisher: None,
            in_flight: VecDeque::new(),
            sent_segment: None,
            backoff: MIN_BACKOFF,
            warned: false,
            deadline: None,
        }
    }

    async fn run(mut self) {
        loop {
            if self.deadline.is_none() && self.shared.stopping.load(Ordering::Relaxed) {
                self.deadline = Some(Instant::now() + self.shared.flush_wait);
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if self.publisher.is_none() && !self.connect().await {
                if self.deadline.is_some() {
                    break;
                }
                self.wait_spooling().await;
                continue;
            }
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                self.settle_oldest().await;
                continue;
            }
            if self.send_next_segment().await {
                continue;
            }
            let mut batch = Vec::with_capacity(BATCH);
            if self.deadline.is_some() || !self.in_flight.is_empty() {
                while batch.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    if self.in_flight.is_empty() {
                        break;
                    }
                    self.settle_oldest().await;
                    continue;
                }
            } else {
                tokio::select! {
                    n = self.rx.recv_many(&mut batch, BATCH) => if n == 0 {
                        break;
                    },
                    _ = self.shared.stop.notified() => continue,
                }
            }
            self.send_batch(Sent::Queue(batch)).await;
        }
        self.fail_in_flight(None);
        self.rx.close();
        self.spill();
        let left = self.shared.spool.lock().events();
        if left > 0 {
            tracing::warn!(
                "export {}: {left} events stay in the spool {} for the next run",
                self.shared.target,
                self.shared.spool_dir
            );
        }
    }

    /// Tries to connect once; false (after one warning per outage) when the broker is away.
    async fn connect(&mut self) -> bool {
        let shared = &self.shared;
        match Publisher::connect(&shared.target, &shared.settings).await {
            Ok(p) => {
                if self.warned {
                    tracing::warn!("export {}: broker is back", shared.target);
                    self.warned = false;
                }
                self.publisher = Some(p);
                self.backoff = MIN_BACKOFF;
                true
            }
            Err(e) => {
                if !self.warned {
                    tracing::warn!(
                        "export {}: broker unreachable ({e}); spooling events to {} until it is back",
                        shared.target,
                        shared.spool_dir
                    );
                    self.warned = true;
                }
                false
            }
        }
    }

    /// Waits out the backoff, moving queued events to the spool meanwhile.
    async fn wait_spooling(&mut self) {
        let until = tokio::time::Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        loop {
            self.spill();
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.shared.stop.notified() => return,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Moves everything queued to the spool.
    fn spill(&mut self) {
        let mut moved = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            moved.push(p);
        }
        if !moved.is_empty() {
            self.shared.spool(&moved);
        }
    }

    /// Sends the oldest spool segment not sent yet, in batches; false when there is none.
    async fn send_next_segment(&mut self) -> bool {
        let taken = self.shared.spool.lock().oldest_after(self.sent_segment);
        let taken = match taken {
            Ok(Some(taken)) => taken,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!("export spool {}: {e}", self.shared.spool_dir);
                return false;
            }
        };
        self.sent_segment = Some(taken.id);
        let parts = taken.payloads.chunks(BATCH).count();
        for (i, chunk) in taken.payloads.chunks(BATCH).enumerate() {
            let sent = Sent::Segment {
                id: taken.id,
                last: i + 1 == parts,
                part: chunk.to_vec(),
            };
            if !self.send_batch(sent).await {
                break;
            }
        }
        if parts == 0 {
            self.shared.spool.lock().remove(taken.id);
        }
        true
    }

    /// Publishes a batch and puts its acknowledgement in flight; false (after failing
    /// everything in flight) when the publish itself failed.
    async fn send_batch(&mut self, what: Sent) -> bool {
        let count = what.payloads().len();
        let Some(publisher) = self.publisher.as_mut() else {
            self.fail(what, count);
            return false;
        };
        add(&self.shared.counters.sent, count);
        match publisher.send(what.payloads()).await {
            Ok(pending) => {
                self.in_flight.push_back(InFlight {
                    what,
                    count,
                    acked: tokio::spawn(pending),
                });
                true
            }
            Err(e) => {
                self.fail(what, count);
                self.fail_in_flight(Some(e.to_string()));
                false
            }
        }
    }

    /// Waits for the oldest batch's acknowledgements; a failure fails everything in flight.
    async fn settle_oldest(&mut self) {
        let Some(mut oldest) = self.in_flight.pop_front() else {
            return;
        };
        let limit = match self.deadline {
            Some(d) => PUBLISH_TIMEOUT.min(d.saturating_duration_since(Instant::now())),
            None => PUBLISH_TIMEOUT,
        };
        let error = match tokio::time::timeout(limit, &mut oldest.acked).await {
            Ok(Ok(Ok(()))) => {
                add(&self.shared.counters.acked, oldest.count);
                if let Sent::Segment { id, last: true, .. } = oldest.what {
                    self.shared.spool.lock().remove(id);
                }
                return;
            }
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no acknowledgement within {limit:?}"),
        };
        oldest.acked.abort();
        self.fail(oldest.what, oldest.count);
        self.fail_in_flight(Some(error));
    }

    /// Counts a failed batch as retried; a queue batch goes to the spool (a segment is still
    /// there).
    fn fail(&mut self, what: Sent, count: usize) {
        add(&self.shared.counters.retried, count);
        if let Sent::Queue(batch) = what {
            self.shared.spool(&batch);
        }
    }

    /// Fails every batch in flight and drops the connection; `error` is warned about once per
    /// outage (None at the end of a run, with nothing to warn).
    fn fail_in_flight(&mut self, error: Option<String>) {
        for batch in std::mem::take(&mut self.in_flight) {
            batch.acked.abort();
            self.fail(batch.what, batch.count);
        }
        self.sent_segment = None;
        if let Some(error) = error {
            if !self.warned {
                tracing::warn!(
                    "export {}: {error}; spooling events to {} until the broker is back",
                    self.shared.target,
                    self.shared.spool_dir
                );
                self.warned = true;
            }
            self.publisher = None;
        }
    }
}
