//! [`LineSink`]: human text or JSON lines to stdout or a file, written by a background thread.
//!
//! `emit` formats the event into a per-thread scratch buffer and appends the finished line to
//! a shared pending buffer; a writer thread swaps that buffer out and writes it with one call,
//! so under load lines are written in large batches and at rest each line appears within a
//! millisecond.
//! Only whole lines are ever written, so a reader (or a stop) never sees half a line. When
//! the writer falls behind by more than [`MAX_PENDING`] bytes, `emit` waits: events are never
//! dropped from these outputs.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tapline_core::{Event, EventKind, EventSink};

use crate::human::HumanLines;
use crate::json;

/// Bytes of formatted lines allowed to wait for the writer before `emit` waits too.
pub const MAX_PENDING: usize = 8 << 20;

/// Once woken, the writer waits this long for more lines unless a full batch is already
/// there: at most one wake-up per millisecond under load, instead of one per line.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// Pending bytes that make a batch worth writing without lingering.
const BATCH: usize = 64 << 10;

/// What a [`LineSink`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// One human line per meaningful event.
    Human,
    /// One JSON object per event (chunk events left out: their bytes belong in a pcap).
    Json,
}

/// Writes events as lines to stdout or a file.
pub struct LineSink {
    format: LineFormat,
    /// JSON lines carry HTTP bodies (`--json-bodies`).
    bodies: bool,
    human: HumanLines,
    shared: Arc<Shared>,
}

struct Shared {
    /// Where lines go; taken before the pending buffer is swapped out, so batches are written
    /// in the order they were filled.
    out: Mutex<Box<dyn Write + Send>>,
    pending: Mutex<Pending>,
    /// Signalled when the pending buffer goes from empty to not empty.
    filled: Condvar,
    /// Signalled when the writer takes the pending buffer.
    drained: Condvar,
    name: String,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// A write failed (e.g. stdout closed): further lines are discarded.
    failed: bool,
}

thread_local! {
    static SCRATCH: RefCell<(String, Vec<u8>)> = RefCell::default();
}

impl LineSink {
    /// Lines to stdout.
    pub fn stdout(format: LineFormat) -> io::Result<LineSink> {
        LineSink::new(Box::new(io::stdout()), format, "stdout")
    }

    /// Lines to a file, created or truncated.
    pub fn file(path: &Path, format: LineFormat) -> io::Result<LineSink> {
        let file = File::create(path)?;
        LineSink::new(Box::new(file), format, &path.display().to_string())
    }

    /// Lines to any writer; `name` says which in diagnostics.
    pub fn new(out: Box<dyn Write + Send>, format: LineFormat, name: &str) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            out: Mutex::new(out),
            pending: Mutex::new(Pending::default()),
            filled: Condvar::new(),
            drained: Condvar::new(),
            name: name.to_string(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name(format!("tapline-out-{name}"))
            .spawn(move || writer.run())?;
        Ok(LineSink {
            format,
            bodies: false,
            human: HumanLines::new(),
            shared,
        })
    }

    /// JSON lines whose `http_request` and `http_response` events carry their bodies.
    pub fn with_bodies(mut self, bodies: bool) -> Self {
        self.bodies = bodies;
        self
    }

    /// Writes one line that is already formatted (ending in a newline), in order with the
    /// events' lines (`tapline collect` passes exported JSON objects through).
    pub fn write_line(&self, line: &[u8]) {
        self.append(line);
    }

    fn append(&self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let mut pending = self.shared.pending.lock();
        while pending.buf.len() > MAX_PENDING && !pending.failed {
            self.shared.drained.wait(&mut pending);
        }
        if pending.failed {
            return;
        }
        let was_empty = pending.buf.is_empty();
        pending.buf.extend_from_slice(line);
        drop(pending);
        if was_empty {
            self.shared.filled.notify_one();
        }
    }
}

impl EventSink for LineSink {
    fn emit(&self, event: &Event) {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (text, bytes) = &mut *scratch;
            match self.format {
                LineFormat::Human => {
                    text.clear();
                    self.human.write_line(event, text);
                    self.append(text.as_bytes());
                }
                LineFormat::Json => {
                    if matches!(event.kind, EventKind::Chunk(_)) {
                        return;
                    }
                    bytes.clear();
                    if self.bodies {
                        json::write_line_with_bodies(event, bytes);
                    } else {
                        json::write_line(event, bytes);
                    }
                    self.append(bytes);
                }
            }
        });
    }

    fn wants_bodies(&self) -> bool {
        self.bodies && self.format == LineFormat::Json
    }

    fn flush(&self) {
        self.shared.write_pending(&mut Vec::new());
    }
}

impl Shared {
    /// The writer thread: waits for lines and writes them in batches.
    fn run(&self) {
        let mut spare = Vec::new();
        loop {
            let batch_ready = {
                let mut pending = self.pending.lock();
                while pending.buf.is_empty() {
                    self.filled.wait(&mut pending);
                }
                pending.buf.len() >= BATCH
            };
            if !batch_ready {
                std::thread::sleep(LINGER);
            }
            self.write_pending(&mut spare);
        }
    }

    /// Writes whatever is pending, then flushes the writer. `spare` is an empty buffer to
    /// swap in (its capacity is reused).
    fn write_pending(&self, spare: &mut Vec<u8>) {
        let mut out = self.out.lock();
        {
            let mut pending = self.pending.lock();
            std::mem::swap(&mut pending.buf, spare);
        }
        self.drained.notify_all();
        if spare.is_empty() {
            let _ = out.flush();
            return;
        }
        let result = out.write_all(spare).and_then(|()| out.flush());
        spare.clear();
        if let Err(e) = result {
            let mut pending = self.pending.lock();
            if !pending.failed {
                pending.failed = true;
                pending.buf = Vec::new();
                tracing::error!(
                    "cannot write events to {}: {e}; dropping further lines",
                    self.name
                );
            }
            drop(pending);
            self.drained.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn many_threads_write_whole_lines_and_flush_writes_all() {
        let out = Capture::default();
        let sink =
            Arc::new(LineSink::new(Box::new(out.clone()), LineFormat::Json, "test").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        sink.emit(&event(EventKind::HttpRequest(request())));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.emit(&event(EventKind::Chunk(tapline_core::Chunk {
            from: tapline_core::Side::Client,
            data: bytes::Bytes::from_static(b"x"),
        })));
        sink.flush();
        let written = out.0.lock().clone();
        let text = String::from_utf8(written).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "chunks are left out of JSON");
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["kind"], "http_request");
        }
    }

    #[test]
    fn human_lines_skip_quiet_events() {
        let out = Capture::default();
        let sink = LineSink::new(Box::new(out.clone()), LineFormat::Human, "test").unwrap();
        sink.emit(&event(EventKind::FlowStart));
        sink.emit(&event(EventKind::HttpResponse(response())));
        sink.flush();
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        assert!(text.starts_with("http 127.0.0.1:51234 GET"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
