//! The `-w` files: what the capture read (after the filter), written by the reader thread
//! itself, so a rotation loses no packet. tcpdump's options for long runs: `-C` (a new file
//! once one passed a size), `-G` (a new file every interval, named by strftime), `-W` (with
//! `-C` a ring of files, with `-G` alone a number of files after which the capture stops),
//! and pcapng output (`format`). `naming` says what each file is called.
//!
//! A file is closed before the packet that would go past its limit (as tcpdump does: a file
//! is over the size by less than one packet); the next one is created when the next packet
//! comes, so an idle capture closes its file on time and leaves no empty one. Records are
//! whole in every closed file: a file is flushed when it closes, when the capture is idle,
//! and when it stops (SIGINT/SIGTERM, `-c`, `--duration`, end of input). Each record reaches
//! the buffer in one piece and the header is written at once, so every write to a file ends
//! on a record: even a killed process leaves files that end on a whole record.

mod format;
mod naming;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local};

pub use format::FileFormat;
pub(crate) use format::{Interface, Record};

use crate::stats::KernelStats;
use format::Closing;
use naming::Naming;

/// Buffer between the reader and a `-w` file.
const BUFFER: usize = 256 << 10;

/// How `-w` writes its files.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// The `-w` name (`-`: standard output); a strftime pattern with `-G`.
    pub path: PathBuf,
    /// pcap or pcapng.
    pub format: FileFormat,
    /// `-C`: a file that holds more than this many bytes is closed before the next packet.
    pub rotate_size: Option<u64>,
    /// `-G`: a file is closed this long after it was opened.
    pub rotate_every: Option<Duration>,
    /// `-W`: with `-C`, the number of files in the ring; with `-G` alone, the number of
    /// files after which the capture stops.
    pub files: Option<u32>,
}

impl WriteConfig {
    /// One pcap file at `path`, never rotated.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        WriteConfig {
            path: path.into(),
            format: FileFormat::Pcap,
            rotate_size: None,
            rotate_every: None,
            files: None,
        }
    }

    /// `-w -`: the one file is standard output.
    fn is_stdout(&self) -> bool {
        self.path == Path::new("-")
    }
}

/// The file being written.
struct OpenFile {
    out: BufWriter<Box<dyn Write + Send>>,
    /// One record or block, whole, before it goes to `out`.
    scratch: Vec<u8>,
    path: PathBuf,
    bytes: u64,
    packets: u64,
    opened: u64,
}

/// The `-w` writer: the current file, and when and how the next one opens.
pub(crate) struct Savefiles {
    config: WriteConfig,
    naming: Naming,
    iface: Interface,
    current: Option<OpenFile>,
    /// The number of the current (or next) file in its time slot.
    seq: u32,
    /// When the current `-G` slot began, and its time for names.
    slot_started: Instant,
    slot_time: DateTime<Local>,
    /// `-G` slots begun.
    slots: u32,
    /// The next file begins a new `-G` slot.
    new_slot: bool,
    /// `-G` with `-W`: the last file was closed; the capture stops.
    finished: bool,
}

impl Savefiles {
    /// Checks the name and creates the first file, so a bad `-w` shows before the run.
    pub(crate) fn create(config: WriteConfig, iface: Interface) -> Result<Savefiles, String> {
        let naming = Naming::new(
            &config.path,
            config.rotate_size.is_some(),
            config.rotate_every.is_some(),
            config.files,
        )?;
        if config.rotate_every.is_some() && !naming.has_conversions() {
            tracing::warn!(
                "-G without a strftime conversion in the -w name: each interval rewrites {}",
                config.path.display()
            );
        }
        let mut files = Savefiles {
            config,
            naming,
            iface,
            current: None,
            seq: 0,
            slot_started: Instant::now(),
            slot_time: Local::now(),
            slots: 1,
            new_slot: false,
            finished: false,
        };
        files.open()?;
        Ok(files)
    }

    /// Whether the current file must close before the next packet: `-C` size passed or
    /// `-G` interval over.
    pub(crate) fn due(&self) -> bool {
        let Some(file) = &self.current else {
            return false;
        };
        self.config.rotate_size.is_some_and(|max| file.bytes > max) || self.interval_over()
    }

    /// Closes the current file (pcapng: with `kernel`'s counters); the next packet opens
    /// the next file. With `-G` and `-W` alone, closing the last file finishes the writer.
    pub(crate) fn rotate(&mut self, kernel: Option<KernelStats>) -> Result<(), String> {
        let by_time = self.interval_over();
        self.close_current(kernel)?;
        if by_time {
            let stop_after = self
                .config
                .files
                .filter(|_| self.config.rotate_size.is_none());
            if stop_after.is_some_and(|count| self.slots >= count) {
                self.finished = true;
            }
            self.new_slot = true;
            self.seq = 0;
        } else {
            self.seq = self.naming.next_seq(self.seq);
        }
        Ok(())
    }

    /// Whether `-W` files were written with `-G` (and no `-C`): the capture should stop.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Writes one packet, opening the next file first if the last one was closed.
    pub(crate) fn write(&mut self, record: &Record<'_>) -> Result<(), String> {
        if self.current.is_none() {
            self.open()?;
        }
        let format = self.config.format;
        let Some(file) = self.current.as_mut() else {
            return Ok(());
        };
        file.scratch.clear();
        let written = format
            .record(record, &mut file.scratch)
            .and_then(|n| file.out.write_all(&file.scratch).map(|()| n))
            .map_err(|e| failed(&file.path, e))?;
        file.bytes += written;
        file.packets += 1;
        Ok(())
    }

    /// Hands what is buffered to the file (the capture is idle).
    pub(crate) fn flush(&mut self) -> Result<(), String> {
        match &mut self.current {
            Some(file) => file.out.flush().map_err(|e| failed(&file.path, e)),
            None => Ok(()),
        }
    }

    /// Closes the last file at the end of the run.
    pub(crate) fn close(mut self, kernel: Option<KernelStats>) -> Result<(), String> {
        self.close_current(kernel)
    }

    fn interval_over(&self) -> bool {
        self.config
            .rotate_every
            .is_some_and(|every| self.slot_started.elapsed() >= every)
    }

    fn open(&mut self) -> Result<(), String> {
        if self.new_slot {
            self.new_slot = false;
            self.slots += 1;
            self.slot_started = Instant::now();
            self.slot_time = Local::now();
        }
        let (path, sink): (PathBuf, Box<dyn Write + Send>) = if self.config.is_stdout() {
            (self.config.path.clone(), Box::new(io::stdout()))
        } else {
            let path = self.naming.name(&self.slot_time, self.seq);
            let file = File::create(&path).map_err(|e| failed(&path, e))?;
            (path, Box::new(file))
        };
        let mut out = BufWriter::with_capacity(BUFFER, sink);
        let bytes = self
            .config
            .format
            .header(&self.iface, &mut out)
            .and_then(|n| out.flush().map(|()| n))
            .map_err(|e| failed(&path, e))?;
        tracing::debug!("writing {}", path.display());
        self.current = Some(OpenFile {
            out,
            scratch: Vec::new(),
            path,
            bytes,
            packets: 0,
            opened: now_micros(),
        });
        Ok(())
    }

    fn close_current(&mut self, kernel: Option<KernelStats>) -> Result<(), String> {
        let Some(mut file) = self.current.take() else {
            return Ok(());
        };
        let closing = Closing {
            opened: file.opened,
            closed: now_micros(),
            packets: file.packets,
            kernel,
        };
        file.scratch.clear();
        self.config
            .format
            .closing(&closing, &mut file.scratch)
            .and_then(|_| file.out.write_all(&file.scratch))
            .and_then(|()| file.out.flush())
            .map_err(|e| failed(&file.path, e))
    }
}

/// Microseconds since the epoch, now.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A write error, naming the file.
fn failed(path: &Path, error: io::Error) -> String {
    format!("cannot write {}: {error}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> Interface {
        Interface {
            linktype: 1,
            snaplen: 65_535,
            name: None,
            filter: None,
        }
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tapline-savefile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes `n` 100-byte packets, rotating whenever due, as the reader does.
    fn write(files: &mut Savefiles, n: usize) {
        let data = [7u8; 100];
        for i in 0..n {
            if files.due() {
                files.rotate(None).unwrap();
                if files.finished() {
                    return;
                }
            }
            let record = Record {
                micros: i as u64,
                orig_len: 100,
                data: &data,
            };
            files.write(&record).unwrap();
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_size_ring_rewrites_its_oldest_file() {
        let dir = dir("ring");
        let config = WriteConfig {
            rotate_size: Some(1000),
            files: Some(3),
            ..WriteConfig::new(dir.join("r.pcap"))
        };
        let mut files = Savefiles::create(config, iface()).unwrap();
        // 24-byte header + 116 bytes a packet: a file is closed after 9 packets (1068
        // bytes), so 40 packets make five files: r0, r1, r2, then r0 (9) and r1 (4) again.
        write(&mut files, 40);
        files.close(None).unwrap();
        assert_eq!(names(&dir), ["r.pcap0", "r.pcap1", "r.pcap2"]);
        let sizes: Vec<u64> = names(&dir)
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
            .collect();
        assert_eq!(sizes, [24 + 9 * 116, 24 + 4 * 116, 24 + 9 * 116]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn time_rotation_with_a_count_finishes_after_that_many_files() {
        let dir = dir("timed");
        let config = WriteConfig {
            rotate_every: Some(Duration::from_millis(30)),
            files: Some(2),
            ..WriteConfig::new(dir.join("t-%Y.pcap"))
        };
        let mut files = Savefiles::create(config, iface()).unwrap();
        write(&mut files, 1);
        std::thread::sleep(Duration::from_millis(40));
        assert!(files.due());
        files.rotate(None).unwrap();
        assert!(!files.finished(), "one file written, two allowed");
        write(&mut files, 1);
        std::thread::sleep(Duration::from_millis(40));
        files.rotate(None).unwrap();
        assert!(files.finished());
        // Both slots fell in the same year: the second file took the first one's name.
        assert_eq!(names(&dir).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
