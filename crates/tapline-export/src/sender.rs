//! The background sender of one target: a thread with its own small runtime that takes events
//! from the target's bounded queue in batches, publishes them and waits for the broker's
//! acknowledgements.
//!
//! While the broker is away (unreachable at start, or a publish or acknowledgement failed)
//! the queue is moved to the spool, and the sender reconnects with exponential backoff
//! (0.1 s doubling to 5 s). Once connected it sends the spool, oldest segment first, before
//! the queue. A failed batch goes to the spool and is sent again: delivery is at-least-once,
//! and a redelivered event keeps its `event_id`. At a stop the sender keeps going until the
//! queue and the spool are empty or the flush deadline passes; what is left stays in the
//! spool for the next run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::broker::{Publisher, Settings};
use crate::spool::Spool;
use crate::target::Target;

/// Events per publish (one pipeline, then the acknowledgements).
pub const BATCH: usize = 2048;
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
    backoff: Duration,
    warned: bool,
    deadline: Option<Instant>,
}

impl Sender {
    fn new(shared: Arc<Shared>, rx: mpsc::Receiver<Bytes>) -> Self {
        Sender {
            shared,
            rx,
            publisher: None,
            backoff: MIN_BACKOFF,
            warned: false,
            deadline: None,
        }
    }

    async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
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
            if self.shared.spool.lock().events() > 0 {
                self.send_spooled().await;
                continue;
            }
            batch.clear();
            if self.deadline.is_some() {
                while batch.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
            } else {
                tokio::select! {
                    n = self.rx.recv_many(&mut batch, BATCH) => if n == 0 {
                        break;
                    },
                    _ = self.shared.stop.notified() => continue,
                }
            }
            if !self.send(&batch).await {
                self.shared.spool(&batch);
            }
        }
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

    /// Sends the spool's oldest segment; deletes it once acknowledged.
    async fn send_spooled(&mut self) {
        let taken = self.shared.spool.lock().oldest();
        match taken {
            Ok(Some(taken)) => {
                for chunk in taken.payloads.chunks(BATCH) {
                    if !self.send(chunk).await {
                        return;
                    }
                }
                self.shared.spool.lock().remove(taken.id);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("export spool {}: {e}", self.shared.spool_dir);
                tokio::time::sleep(self.backoff).await;
            }
        }
    }

    /// Publishes a batch and waits for its acknowledgements; on failure drops the connection
    /// and counts the batch as retried.
    async fn send(&mut self, batch: &[Bytes]) -> bool {
        let Some(publisher) = self.publisher.as_mut() else {
            return false;
        };
        let counters = &self.shared.counters;
        add(&counters.sent, batch.len());
        let limit = match self.deadline {
            Some(d) => PUBLISH_TIMEOUT.min(d.saturating_duration_since(Instant::now())),
            None => PUBLISH_TIMEOUT,
        };
        let error = match tokio::time::timeout(limit, publisher.publish(batch)).await {
            Ok(Ok(())) => {
                add(&counters.acked, batch.len());
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no acknowledgement within {limit:?}"),
        };
        add(&counters.retried, batch.len());
        if !self.warned {
            tracing::warn!(
                "export {}: {error}; spooling events to {} until the broker is back",
                self.shared.target,
                self.shared.spool_dir
            );
            self.warned = true;
        }
        self.publisher = None;
        false
    }
}
