//! Opening libpcap sources: a live interface or a capture file, with the BPF filter applied.

use std::path::PathBuf;

use pcap::{Active, Capture, Device, Offline};

use crate::error::{pcap_message, CaptureError};

/// libpcap's read timeout for a live capture (it is read in non-blocking mode: on Linux an
/// immediate-mode capture's blocking read may ignore the timeout and never notice a stop).
const LIVE_READ_TIMEOUT_MS: i32 = 100;

/// Where packets come from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A live interface (`-i`).
    Live {
        /// Interface name (`lo`, `eth0`, `any`).
        interface: String,
        /// Bytes kept per packet.
        snaplen: i32,
        /// Promiscuous mode.
        promisc: bool,
    },
    /// A pcap or pcapng file (`-r`).
    File(PathBuf),
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
            SourceSpec::Live {
                interface,
                snaplen,
                promisc,
            } => Source::Live(open_live(interface, *snaplen, *promisc)?),
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

fn open_live(
    interface: &str,
    snaplen: i32,
    promisc: bool,
) -> Result<Capture<Active>, CaptureError> {
    let known = Device::list()
        .map(|devices| devices.iter().any(|d| d.name == interface))
        .unwrap_or(true);
    if !known {
        return Err(CaptureError::NoSuchInterface(interface.to_string()));
    }
    let inactive = Capture::from_device(interface)
        .map_err(|e| CaptureError::Pcap(pcap_message(e)))?
        .snaplen(snaplen)
        .promisc(promisc)
        .immediate_mode(true)
        .timeout(LIVE_READ_TIMEOUT_MS);
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
