//! The view's memory: the newest rows (at most `--web-history`), and a broadcast of each new
//! row to the live streams. Adding a row never waits for a reader: a stream that falls
//! behind by more than the broadcast's capacity is ended (the page reconnects and resumes
//! from the history).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tapline_core::{Event, EventSink, Kind};
use tokio::sync::broadcast;

use crate::row::{from_object, row, Row, ROW_KINDS};

/// Rows a live stream may fall behind before it is ended.
const STREAM_BACKLOG: usize = 4096;

/// The bounded history, and the sink that fills it.
pub struct History {
    rows: Mutex<VecDeque<Arc<Row>>>,
    capacity: usize,
    next_id: AtomicU64,
    live: broadcast::Sender<Arc<Row>>,
    ended: AtomicBool,
}

impl History {
    /// A history keeping the newest `capacity` rows.
    pub fn new(capacity: usize) -> Arc<History> {
        let (live, _) = broadcast::channel(STREAM_BACKLOG);
        Arc::new(History {
            rows: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 16))),
            capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
            live,
            ended: AtomicBool::new(false),
        })
    }

    /// Adds a row under the next id: the oldest drops out when the history is full; live
    /// streams hear of it. Ids are given under the lock, so the history stays in id order.
    fn push(&self, mut row: Row) {
        let mut rows = self.rows.lock();
        row.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        row.json = format!("{{\"id\":{},{}", row.id, &row.json[1..]);
        let row = Arc::new(row);
        if rows.len() == self.capacity {
            rows.pop_front();
        }
        rows.push_back(row.clone());
        let _ = self.live.send(row);
    }

    /// Takes an event as its JSON object (`tapline collect`, which passes the agents' JSON
    /// lines through), if the table lists its kind.
    pub fn push_object(&self, value: serde_json::Value) {
        if let Some(row) = from_object(value) {
            self.push(row);
        }
    }

    /// The rows after `after` (an id), oldest first.
    pub fn since(&self, after: u64) -> Vec<Arc<Row>> {
        let rows = self.rows.lock();
        let start = rows.partition_point(|r| r.id <= after);
        rows.range(start..).cloned().collect()
    }

    /// A receiver of rows added from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Row>> {
        self.live.subscribe()
    }

    /// Says the traffic source ended (a file was read to its end); the view stays up.
    pub fn end_of_source(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    /// Whether the traffic source ended.
    pub fn source_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Rows made so far (including those that dropped out).
    pub fn total(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }
}

impl EventSink for History {
    fn emit(&self, event: &Event) {
        if !ROW_KINDS.contains(&event.kind.kind()) {
            return;
        }
        if let Some(row) = row(event) {
            self.push(row);
        }
    }

    fn wants_details(&self, kind: Kind) -> bool {
        ROW_KINDS.contains(&kind)
    }

    fn wants_bodies(&self) -> bool {
        true
    }
}
