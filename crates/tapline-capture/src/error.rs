//! Why a capture could not start or had to stop.

use std::path::PathBuf;

/// A capture error, one line each. [`CaptureError::is_usage`] tells configuration mistakes
/// (exit 2) from runtime failures (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Live capture without the privilege to open a packet socket.
    #[error("capture on {interface} needs root or CAP_NET_RAW ({message})")]
    Permission {
        /// The interface asked for.
        interface: String,
        /// libpcap's message.
        message: String,
    },
    /// The interface does not exist.
    #[error("no such interface: {0} (tapline capture -D lists them)")]
    NoSuchInterface(String),
    /// libpcap rejected the BPF filter.
    #[error("invalid filter {filter:?}: {message}")]
    Filter {
        /// The filter text.
        filter: String,
        /// libpcap's message.
        message: String,
    },
    /// The capture file could not be opened or is not a pcap/pcapng file.
    #[error("cannot read capture file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// libpcap's message.
        message: String,
    },
    /// The `-w` file could not be created, or its name is not a valid pattern.
    #[error("-w: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong, naming the file.
        message: String,
    },
    /// Any other libpcap failure.
    #[error("libpcap: {0}")]
    Pcap(String),
    /// A worker thread could not be started.
    #[error("cannot start a capture worker: {0}")]
    Thread(String),
}

impl CaptureError {
    /// True for mistakes in what was asked (bad interface, filter or file): exit code 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CaptureError::NoSuchInterface(_)
                | CaptureError::Filter { .. }
                | CaptureError::File { .. }
                | CaptureError::Write { .. }
        )
    }
}

/// libpcap's text for an error.
pub(crate) fn pcap_message(error: pcap::Error) -> String {
    match error {
        pcap::Error::PcapError(message) => message,
        other => other.to_string(),
    }
}
