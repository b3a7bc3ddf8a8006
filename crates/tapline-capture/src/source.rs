//! Opening libpcap sources: a live interface or a capture file, with the BPF filter applied.

use std::path::PathBuf;
use std::time::Duration;

use pcap::{Active, Capture, Device, Direction, Offline};

use crate::error::{pcap_message, CaptureError};

/// libpcap's read timeout for a live capture: without immediate mode, the longest a packet
/// waits in the kernel's buffer before it is handed on (it is read in non-blocking mode: on
/// Linux an immediate-mode capture's blocking read may ignore the timeout and never notice a
/// stop).
pub(crate) const LIVE_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Where packets come from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A live interface (`-i`).
    Live(LiveSpec),
    /// A pcap or pcapng file (`-r`).
    File(PathBuf),
}

/// A live capture's interface and options, tcpdump's meaning for each.
#[derive(Debug, Clone)]
pub struct LiveSpec {
    /// Interface name (`lo`, `eth0`, `any`).
    pub interface: String,
    /// Bytes kept per packet (`-s`).
    pub snaplen: i32,
    /// Promiscuous mode (on unless `-p`).
    pub promisc: bool,
    /// Which packets of the interface (`-Q`): both ways unless given.
    pub direction: Option<CaptureDirection>,
    /// The kernel's capture buffer, in bytes (`-B`, given in KiB); libpcap's default unless
    /// given.
    pub buffer_size: Option<i32>,
    /// Hand each packet on as it arrives (`--immediate-mode`) rather than in the kernel's
    /// blocks (at most [`LIVE_READ_TIMEOUT`] late). On Linux immediate mode means a ring of
    /// snaplen-sized slots (MTU-sized: 64 KiB on `lo`), so far fewer packets fit the buffer.
    pub immediate: bool,
}

impl LiveSpec {
    /// `interface` with tcpdump's defaults: snap length 262144, promiscuous, both directions.
    pub fn new(interface: impl Into<String>) -> Self {
        LiveSpec {
            interface: interface.into(),
            snaplen: 262_144,
            promisc: true,
            direction: None,
            buffer_size: None,
            immediate: false,
        }
    }
}

/// `-Q`: the packets an interface received, sent, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDirection {
    /// Received (`in`).
    In,
    /// Sent (`out`).
    Out,
    /// Both (`inout`).
    InOut,
}

impl std::str::FromStr for CaptureDirection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in" => Ok(CaptureDirection::In),
            "out" => Ok(CaptureDirection::Out),
            "inout" => Ok(CaptureDirection::InOut),
            other => Err(format!("{other:?} is not a direction: in, out or inout")),
        }
    }
}

/// An opened source.
pub(crate) enum Source {
    Live(Capture<Active>),
    File(Capture<Offline>),
}

impl Source {
    /// Opens `spec` and applies `filter`.
    pub(crate) fn open(spec: &SourceSpec, filter: Option<&str>) -> Result<Source, CaptureError> {
        let mut source = match spec {
            SourceSpec::Live(live) => Source::Live(open_live(live)?),
            SourceSpec::File(path) => {
                Source::File(Capture::from_file(path).map_err(|e| CaptureError::File {
                    path: path.clone(),
                    message: pcap_message(e),
                })?)
            }
        };
        if let Some(filter) = filter.filter(|f| !f.trim().is_empty()) {
            let result = match &mut source {
                Source::Live(c) => c.filter(filter, true),
                Source::File(c) => c.filter(filter, true),
            };
            result.map_err(|e| CaptureError::Filter {
                filter: filter.to_string(),
                message: pcap_message(e),
            })?;
        }
        Ok(source)
    }

    /// The source's LINKTYPE_ number.
    pub(crate) fn linktype(&self) -> i32 {
        match self {
            Source::Live(c) => c.get_datalink().0,
            Source::File(c) => c.get_datalink().0,
        }
    }
}

fn open_live(spec: &LiveSpec) -> Result<Capture<Active>, CaptureError> {
    let interface = spec.interface.as_str();
    let known = Device::list()
        .map(|devices| devices.iter().any(|d| d.name == interface))
        .unwrap_or(true);
    if !known {
        return Err(CaptureError::NoSuchInterface(interface.to_string()));
    }
    let mut inactive = Capture::from_device(interface)
        .map_err(|e| CaptureError::Pcap(pcap_message(e)))?
        .snaplen(spec.snaplen)
        .promisc(spec.promisc)
        .immediate_mode(spec.immediate)
        .timeout(LIVE_READ_TIMEOUT.as_millis() as i32);
    if let Some(bytes) = spec.buffer_size {
        inactive = inactive.buffer_size(bytes);
    }
    let active = inactive.open().map_err(|e| {
        let message = pcap_message(e);
        let lower = message.to_ascii_lowercase();
        if lower.contains("permission") || lower.contains("not permitted") {
            CaptureError::Permission {
                interface: interface.to_string(),
                message,
            }
        } else if lower.contains("no such device") {
            CaptureError::NoSuchInterface(interface.to_string())
        } else {
            CaptureError::Pcap(message)
        }
    })?;
    if let Some(direction) = spec.direction {
        let direction = match direction {
            CaptureDirection::In => Direction::In,
            CaptureDirection::Out => Direction::Out,
            CaptureDirection::InOut => Direction::InOut,
        };
        active
            .direction(direction)
            .map_err(|e| CaptureError::Pcap(format!("-Q: {}", pcap_message(e))))?;
    }
    active
        .setnonblock()
        .map_err(|e| CaptureError::Pcap(pcap_message(e)))
}

/// A capture interface, as `-D` lists it.
#[derive(Debug, Clone)]
pub struct Interface {
    /// The name to give to `-i`.
    pub name: String,
    /// libpcap's description, if any.
    pub description: Option<String>,
    /// Flags worth showing: `Up`, `Running`, `Loopback`, `Wireless`.
    pub flags: Vec<&'static str>,
}

/// Every interface libpcap can capture on, in its order.
pub fn list_interfaces() -> Result<Vec<Interface>, CaptureError> {
    let devices = Device::list().map_err(|e| CaptureError::Pcap(pcap_message(e)))?;
    Ok(devices
        .into_iter()
        .map(|d| {
            let mut flags = Vec::new();
            for (on, name) in [
                (d.flags.is_up(), "Up"),
                (d.flags.is_running(), "Running"),
                (d.flags.is_loopback(), "Loopback"),
                (d.flags.is_wireless(), "Wireless"),
            ] {
                if on {
                    flags.push(name);
                }
            }
            Interface {
                name: d.name,
                description: d.desc,
                flags,
            }
        })
        .collect())
}
