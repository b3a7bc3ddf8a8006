//! [`ExportSink`]: the `EventSink` that exports every event to one or more brokers.
//!
//! `emit` renders the event once (the JSON-lines object plus `agent` and `event_id`) and
//! offers it to each target's bounded queue without waiting; a full queue spills to that
//! target's spool on disk (counted as spooled). Nothing on the traffic or capture path ever
//! waits for a broker.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tapline_core::{Event, EventKind, EventSink};
use tapline_output::{json, Metrics};
use tokio::sync::{mpsc, Notify};

use crate::broker::Settings;
use crate::sender::{self, Shared};
use crate::spool::Spool;
use crate::target::Target;

/// Events held in memory per target before they spill to the spool.
pub const DEFAULT_QUEUE: usize = 65_536;

/// What went wrong setting up the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The spool directory cannot be created, locked or written.
    #[error("--export-spool {0}: {1}")]
    Spool(String, std::io::Error),
    /// The sender thread or its runtime could not start.
    #[error("cannot start the exporter: {0}")]
    Start(std::io::Error),
}

/// The export's settings.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Where events go (`--export`, repeatable).
    pub targets: Vec<Target>,
    /// Broker settings (`--export-stream`, `--export-maxlen`).
    pub settings: Settings,
    /// This agent's name in every event (`--agent-id`).
    pub agent: String,
    /// The spool's root (`--export-spool`); each target spools in a directory of its own
    /// under it.
    pub spool_dir: PathBuf,
    /// The bound of each target's spool in bytes (`--export-spool-max`).
    pub spool_max: u64,
    /// Events held in memory per target.
    pub queue: usize,
    /// How long a stop keeps sending.
    pub flush_wait: Duration,
}

impl ExportConfig {
    /// The spool directory used when `--export-spool` is not given: `tapline-spool-AGENT`
    /// in the system's temporary directory.
    pub fn default_spool_dir(agent: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tapline-spool-{}", file_safe(agent)))
    }
}

/// `s` with everything but letters, digits, `-` and `.` replaced by `_`.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One target's queue and sender.
struct Lane {
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// Exports events to brokers; see the module docs.
pub struct ExportSink {
    agent: String,
    /// `AGENT:RUN-UUID:`, the start of every event id of this run.
    id_prefix: String,
    seq: AtomicU64,
    lanes: Vec<Lane>,
    flushed: AtomicBool,
}

impl ExportSink {
    /// Opens every target's spool (failing if one cannot be written) and starts their
    /// senders. Brokers need not be reachable: their events wait in the spool.
    pub fn start(config: ExportConfig) -> Result<ExportSink, ExportError> {
        let mut lanes = Vec::with_capacity(config.targets.len());
        for target in &config.targets {
            let dir = config.spool_dir.join(file_safe(&target.url));
            let spool = Spool::open(&dir, config.spool_max)
                .map_err(|e| ExportError::Spool(config.spool_dir.display().to_string(), e))?;
            let shared = Arc::new(Shared {
                target: target.clone(),
                settings: config.settings.clone(),
                spool: Mutex::new(spool),
                spool_dir: dir.display().to_string(),
                counters: Default::default(),
                stopping: AtomicBool::new(false),
                stop: Notify::new(),
                flush_wait: config.flush_wait,
            });
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            let done = sender::spawn(shared.clone(), rx).map_err(ExportError::Start)?;
            lanes.push(Lane {
                tx,
                shared,
                done: Mutex::new(Some(done)),
            });
        }
        Ok(ExportSink {
            id_prefix: format!("{}:{}:", config.agent, uuid::Uuid::new_v4()),
            agent: config.agent,
            seq: AtomicU64::new(0),
            lanes,
            flushed: AtomicBool::new(false),
        })
    }

    /// Registers each target's counters (sent, acked, retried, spooled, dropped) for
    /// `--metrics` and the end-of-run stats.
    pub fn register_metrics(&self, metrics: &Metrics) {
        type Read = fn(&sender::Counters) -> &AtomicU64;
        let counters: [(&str, &str, Read); 5] = [
            ("sent", "Events sent to the broker", |c| &c.sent),
            ("acked", "Events the broker acknowledged", |c| &c.acked),
            ("retried", "Events sent again after a failure", |c| {
                &c.retried
            }),
            ("spooled", "Events spooled to disk", |c| &c.spooled),
            ("dropped", "Events dropped from a full spool", |c| {
                &c.dropped
            }),
        ];
        for lane in &self.lanes {
            for (name, help, read) in counters {
                let shared = lane.shared.clone();
                metrics.register(
                    &format!("tapline_export_{name}_total"),
                    &format!("{help}."),
                    &[("target", &lane.shared.target.url)],
                    move || read(&shared.counters).load(Ordering::Relaxed),
                );
            }
        }
    }
}

impl EventSink for ExportSink {
    fn emit(&self, event: &Event) {
        if matches!(event.kind, EventKind::Chunk(_)) {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(self.id_prefix.len() + 20);
        id.push_str(&self.id_prefix);
        let _ = write!(id, "{seq}");
        let mut line = Vec::with_capacity(512);
        json::write_line_with(
            event,
            &[("agent", &self.agent), ("event_id", &id)],
            &mut line,
        );
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let payload = Bytes::from(line);
        for lane in &self.lanes {
            if let Err(e) = lane.tx.try_send(payload.clone()) {
                let payload = match e {
                    mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
                };
                lane.shared.spool(&[payload]);
            }
        }
    }

    /// Stops every sender: each sends what is queued (and spooled) within the flush wait,
    /// then leaves the rest in its spool.
    fn flush(&self) {
        if self.flushed.swap(true, Ordering::Relaxed) {
            return;
        }
        for lane in &self.lanes {
            lane.shared.stopping.store(true, Ordering::Relaxed);
            lane.shared.stop.notify_one();
        }
        for lane in &self.lanes {
            if let Some(done) = lane.done.lock().take() {
                let wait = lane.shared.flush_wait + Duration::from_secs(2);
                if done.recv_timeout(wait).is_err() {
                    tracing::warn!(
                        "export {}: the sender did not stop in time",
                        lane.shared.target
                    );
                }
            }
        }
    }
}
