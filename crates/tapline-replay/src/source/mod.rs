//! Where the traffic to replay comes from: a pcap/pcapng file decoded by tapline's capture,
//! tapline's JSON lines, or a HAR 1.2 file. A source is opened first (so a missing or
//! unreadable file is said before anything connects), then read on its own thread, handing
//! [`Feed`]s to the engine over a bounded channel: reading waits while the replay is behind,
//! so memory holds a window of the capture, never the whole file (except a HAR file, which is
//! one JSON document and is parsed whole).

mod har;
mod jsonl;
mod pcap;

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::feed::Feed;

pub use self::pcap::PcapOptions;

/// An opened source, ready to be read.
pub enum Source {
    /// A capture file, decoded as `tapline capture -r` does.
    Pcap(Box<pcap::PcapSource>),
    /// tapline's JSON lines (`http_request` and `http_response` events).
    Jsonl(jsonl::JsonlSource),
    /// A HAR 1.2 file's entries.
    Har(har::HarSource),
}

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file is missing, unreadable, or not what its name says (a usage mistake).
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Decoding the capture failed part-way.
    #[error("{0}")]
    Read(String),
}

impl Source {
    /// Opens `path` as its extension says: `.jsonl`/`.json`/`.ndjson` (JSON lines), `.har`
    /// (HAR), anything else a pcap/pcapng file.
    pub fn open(path: &Path, pcap: PcapOptions) -> Result<Source, SourceError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "json" | "ndjson" => Ok(Source::Jsonl(jsonl::JsonlSource::open(path)?)),
            "har" => Ok(Source::Har(har::HarSource::open(path)?)),
            _ => Ok(Source::Pcap(Box::new(pcap::PcapSource::open(path, pcap)?))),
        }
    }

    /// Reads the source on a thread of its own, sending feeds to `tx` (waiting while it is
    /// full) until the source ends or the receiver goes away.
    pub(crate) fn start(
        self,
        tx: mpsc::Sender<Feed>,
    ) -> std::io::Result<std::thread::JoinHandle<Result<(), SourceError>>> {
        std::thread::Builder::new()
            .name("tapline-replay-source".into())
            .spawn(move || match self {
                Source::Pcap(s) => s.read(tx),
                Source::Jsonl(s) => s.read(&tx),
                Source::Har(s) => s.read(&tx),
            })
    }
}

/// The error for an input file that cannot be used.
fn input_error(path: &Path, message: impl std::fmt::Display) -> SourceError {
    SourceError::Input {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Decodes a request body carried as text or base64 (`body` in JSON lines,
/// `postData` in HAR).
fn body_from(text: Option<&str>, base64: Option<&str>) -> bytes::Bytes {
    use base64::Engine;
    if let Some(b) = base64.and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()) {
        return b.into();
    }
    text.map(|t| bytes::Bytes::copy_from_slice(t.as_bytes()))
        .unwrap_or_default()
}
