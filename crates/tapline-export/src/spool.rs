//! The on-disk spool: events that could not go to the broker yet, kept in order in segment
//! files, bounded in bytes.
//!
//! A spool is a directory holding `NNNNNNNNNNNNNNNN.jsonl` segments (one payload per line, the
//! exact bytes that would have been published) and a `lock` file that one run holds locked
//! while it uses the directory. New payloads are appended to the newest segment; a segment is
//! closed once it reaches a size of its own (an eighth of the bound, between 4 KiB and 8 MiB)
//! or when the sender takes it. The sender reads the oldest segment whole, publishes it, and
//! deletes it only once the broker acknowledged every event in it, so a crash or a failure
//! halfway through sends the segment again (at-least-once). Past the bound the oldest
//! segments are deleted and their events counted as dropped. A run finds what an earlier run
//! left (same directory) and sends it first.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Smallest and largest segment size.
const SEGMENT_MIN: u64 = 4 << 10;
const SEGMENT_MAX: u64 = 8 << 20;

/// One segment file's accounting.
#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    bytes: u64,
    events: u64,
}

/// A bounded on-disk queue of payloads.
pub struct Spool {
    dir: PathBuf,
    max: u64,
    segment_size: u64,
    /// Held locked (advisory) while this run uses the directory.
    _lock: File,
    /// Closed segments, oldest first.
    closed: VecDeque<Segment>,
    /// The segment being appended to.
    open: Option<(Segment, BufWriter<File>)>,
    next_id: u64,
    bytes: u64,
    events: u64,
    /// A write failed and was warned about; no more warnings until one succeeds.
    failing: bool,
}

/// A segment handed to the sender: its id (for [`Spool::remove`]) and its payloads.
pub struct Taken {
    /// Which segment.
    pub id: u64,
    /// Its payloads, in order, without their newlines.
    pub payloads: Vec<Bytes>,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, bounded to `max` bytes, and counts
    /// what an earlier run left there. Fails when the directory cannot be written or another
    /// run holds it.
    pub fn open(dir: &Path, max: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other("another tapline run is using it"))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                let data = fs::read(&path)?;
                let events = data.iter().filter(|&&b| b == b'\n').count() as u64;
                found.push(Segment {
                    id,
                    bytes: data.len() as u64,
                    events,
                });
            }
        }
        found.sort_by_key(|s| s.id);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max,
            segment_size: (max / 8).clamp(SEGMENT_MIN, SEGMENT_MAX),
            _lock: lock,
            next_id: found.last().map_or(1, |s| s.id + 1),
            bytes: found.iter().map(|s| s.bytes).sum(),
            events: found.iter().map(|s| s.events).sum(),
            closed: found.into(),
            open: None,
            failing: false,
        };
        spool.trim();
        Ok(spool)
    }

    /// Events waiting in the spool.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Appends one payload (without a newline). Returns how many events were dropped, oldest
    /// first, to keep the spool within its bound; a write error drops the payload itself.
    pub fn push(&mut self, payload: &[u8]) -> u64 {
        match self.append(payload) {
            Ok(()) => {
                self.failing = false;
                self.trim()
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(
                        "export spool {}: {e}; events are dropped (counted) until it can be written",
                        self.dir.display()
                    );
                    self.failing = true;
                }
                1
            }
        }
    }

    fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self
            .open
            .as_ref()
            .is_some_and(|(s, _)| s.bytes >= self.segment_size)
        {
            self.close()?;
        }
        if self.open.is_none() {
            let id = self.next_id;
            self.next_id += 1;
            let file = File::create(self.path(id))?;
            let segment = Segment {
                id,
                bytes: 0,
                events: 0,
            };
            self.open = Some((segment, BufWriter::with_capacity(64 << 10, file)));
        }
        let (segment, writer) = self.open.as_mut().expect("opened above");
        writer.write_all(payload)?;
        writer.write_all(b"\n")?;
        let len = payload.len() as u64 + 1;
        segment.bytes += len;
        segment.events += 1;
        self.bytes += len;
        self.events += 1;
        Ok(())
    }

    /// Writes out the open segment and closes it.
    fn close(&mut self) -> io::Result<()> {
        if let Some((segment, mut writer)) = self.open.take() {
            self.closed.push_back(segment);
            writer.flush()?;
        }
        Ok(())
    }

    /// Deletes the oldest segments while the spool is over its bound; returns the events
    /// deleted.
    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        while self.bytes > self.max {
            let Some(oldest) = self.closed.pop_front() else {
                break;
            };
            dropped += oldest.events;
            self.forget(oldest);
        }
        dropped
    }

    fn forget(&mut self, segment: Segment) {
        self.bytes -= segment.bytes;
        self.events -= segment.events;
        if let Err(e) = fs::remove_file(self.path(segment.id)) {
            tracing::warn!("export spool: cannot remove segment {}: {e}", segment.id);
        }
    }

    /// The payloads of the oldest segment newer than `after` (any, for None), which stay in
    /// the spool until [`Spool::remove`]. Closes the open segment when no closed one is left.
    pub fn oldest_after(&mut self, after: Option<u64>) -> io::Result<Option<Taken>> {
        let newer = |s: &&Segment| after.is_none_or(|a| s.id > a);
        if !self.closed.iter().any(|s| newer(&s)) {
            self.close()?;
        }
        let Some(segment) = self.closed.iter().find(newer).copied() else {
            return Ok(None);
        };
        let data = Bytes::from(fs::read(self.path(segment.id))?);
        let mut payloads = Vec::with_capacity(segment.events as usize);
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' {
                if i > start {
                    payloads.push(data.slice(start..i));
                }
                start = i + 1;
            }
        }
        Ok(Some(Taken {
            id: segment.id,
            payloads,
        }))
    }

    /// Deletes segment `id` once its events were acknowledged (nothing if the bound already
    /// deleted it).
    pub fn remove(&mut self, id: u64) {
        if let Some(at) = self.closed.iter().position(|s| s.id == id) {
            let segment = self.closed.remove(at).expect("position is in range");
            self.forget(segment);
        }
    }

    /// Writes out what is buffered, so the files hold every event (at a stop).
    pub fn sync(&mut self) -> io::Result<()> {
        match &mut self.open {
            Some((_, writer)) => writer.flush(),
            None => Ok(()),
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016}.jsonl"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: usize) -> Vec<u8> {
        format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)).into_bytes()
    }

    #[test]
    fn keeps_order_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..100 {
                assert_eq!(spool.push(&payload(i)), 0);
            }
            assert_eq!(spool.events(), 100);
            spool.sync().unwrap();
        }
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.events(), 100);
        let mut seen = Vec::new();
        while let Some(taken) = spool.oldest_after(None).unwrap() {
            seen.extend(taken.payloads.iter().map(|p| p.to_vec()));
            spool.remove(taken.id);
        }
        assert_eq!(seen, (0..100).map(payload).collect::<Vec<_>>());
        assert_eq!(spool.events(), 0);
    }

    #[test]
    fn drops_the_oldest_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 16 << 10).unwrap();
        let dropped: u64 = (0..1000).map(|i| spool.push(&payload(i))).sum();
        assert!(dropped > 800, "dropped {dropped}");
        assert_eq!(spool.events() + dropped, 1000);
        let first = spool.oldest_after(None).unwrap().unwrap();
        assert_eq!(first.payloads[0].as_ref(), payload(dropped as usize));
        let second = spool.oldest_after(Some(first.id)).unwrap().unwrap();
        assert!(second.id > first.id);
    }

    #[test]
    fn one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), 1 << 20).unwrap();
        let second = Spool::open(dir.path(), 1 << 20).err().unwrap();
        assert!(second.to_string().contains("another tapline run"));
    }
}
