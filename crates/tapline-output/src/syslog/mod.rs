//! Syslog: RFC 5424 (default, with structured data) or RFC 3164 messages over UDP, or over
//! TCP with RFC 6587 octet counting.
//!
//! `emit` formats the message and queues it (bounded); one background thread per target sends
//! it. Over TCP the thread reconnects with exponential backoff and keeps queued messages until
//! they are written, so a syslog server that restarts gets what was queued meanwhile. A message
//! is dropped only when the queue is full or, at the end, when the server stays away past the
//! flush deadline; drops are counted, warned about, and reported in the end-of-run stats.
//!
//! Here: targets, configuration and the sink; `sender` is the background thread of a target,
//! `format` writes the messages.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tapline_core::{Event, EventKind, EventSink, Kind, KindSet, Timestamp};

use crate::metrics::Metrics;

mod format;
mod sender;

use format::local_hostname;
pub use format::{format_message, frame_octet_counted};
use sender::Sender;

/// The SD-ID enterprise number: 32473 is the one IANA reserves for documentation (RFC 5612).
pub const ENTERPRISE: u32 = 32473;
/// Messages queued per target before new ones are dropped (and counted).
pub const DEFAULT_QUEUE: usize = 100_000;
/// How long `flush` waits for a syslog server to take what is queued.
pub const FLUSH_WAIT: Duration = Duration::from_secs(3);
/// Messages written per TCP write.
const BATCH: usize = 512;
/// Longest pause between TCP reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What went wrong setting up a syslog output.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// The target is not `udp://HOST:PORT` or `tcp://HOST:PORT`.
    #[error("syslog target '{0}' is not udp://HOST:PORT or tcp://HOST:PORT")]
    BadTarget(String),
    /// The host name does not resolve.
    #[error("syslog target '{0}' does not resolve: {1}")]
    Resolve(String, io::Error),
    /// An unknown event kind in `--syslog-events`.
    #[error("unknown event kind '{0}' in --syslog-events (known: {known}, or all)", known = known_kinds())]
    UnknownKind(String),
    /// The sender thread could not start.
    #[error("cannot start the syslog sender: {0}")]
    Thread(io::Error),
}

/// Every kind name, for the error message.
fn known_kinds() -> String {
    Kind::ALL.map(Kind::name).join(", ")
}

/// Transport to the syslog server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message.
    Udp,
    /// A stream with octet-counting framing (RFC 6587).
    Tcp,
}

/// Where syslog messages go: `udp://HOST:PORT` or `tcp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    /// UDP or TCP.
    pub transport: Transport,
    /// The resolved server address.
    pub addr: SocketAddr,
    /// The target as given.
    pub url: String,
}

impl FromStr for SyslogTarget {
    type Err = SyslogError;

    fn from_str(url: &str) -> Result<Self, SyslogError> {
        let bad = || SyslogError::BadTarget(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            _ => return Err(bad()),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || !rest.contains(':') || rest.contains('/') {
            return Err(bad());
        }
        let addr = rest
            .to_socket_addrs()
            .map_err(|e| SyslogError::Resolve(url.to_string(), e))?
            .next()
            .ok_or_else(bad)?;
        Ok(SyslogTarget {
            transport,
            addr,
            url: url.to_string(),
        })
    }
}

/// Message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFormat {
    /// RFC 5424 with structured data.
    #[default]
    Rfc5424,
    /// BSD syslog, RFC 3164.
    Rfc3164,
}

/// Which event kinds `--syslog-events` sends: parsed from names (`all` for every kind);
/// alerts and plugin records when none are given.
pub fn parse_kinds<S: AsRef<str>>(names: &[S]) -> Result<KindSet, SyslogError> {
    if names.is_empty() {
        return Ok(KindSet::of(&[Kind::Record, Kind::Alert]));
    }
    let mut kinds = KindSet::EMPTY;
    for name in names {
        let name = name.as_ref().trim();
        if name.eq_ignore_ascii_case("all") {
            kinds = KindSet::ALL;
            continue;
        }
        let kind = Kind::from_name(&name.to_ascii_lowercase())
            .ok_or_else(|| SyslogError::UnknownKind(name.to_string()))?;
        kinds = kinds.with(kind);
    }
    Ok(kinds)
}

/// A syslog output's settings.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// Where to send.
    pub target: SyslogTarget,
    /// RFC 5424 or 3164.
    pub format: SyslogFormat,
    /// Which events to send.
    pub kinds: KindSet,
    /// Messages queued before drops.
    pub queue: usize,
    /// The HOSTNAME field.
    pub hostname: String,
}

impl SyslogConfig {
    /// Settings with the default queue and this machine's host name.
    pub fn new(target: SyslogTarget, format: SyslogFormat, kinds: KindSet) -> Self {
        SyslogConfig {
            target,
            format,
            kinds,
            queue: DEFAULT_QUEUE,
            hostname: local_hostname(),
        }
    }
}

/// Counts of one syslog output, for metrics and the end-of-run stats.
#[derive(Debug, Default)]
pub struct SyslogCounters {
    /// Messages written to the socket.
    pub sent: AtomicU64,
    /// Messages dropped (queue full, undeliverable at the end, or a datagram send error).
    pub dropped: AtomicU64,
}

/// Sends selected events to one syslog server.
pub struct SyslogSink {
    config: SyslogConfig,
    pid: u32,
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<VecDeque<Vec<u8>>>,
    /// Signalled when a message is queued and when the queue empties.
    changed: Condvar,
    counters: SyslogCounters,
    warned_full: std::sync::atomic::AtomicBool,
}

impl SyslogSink {
    /// Starts the sender thread for `config`.
    pub fn start(config: SyslogConfig) -> Result<SyslogSink, SyslogError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            changed: Condvar::new(),
            counters: SyslogCounters::default(),
            warned_full: Default::default(),
        });
        let sender = Sender {
            shared: shared.clone(),
            target: config.target.clone(),
        };
        std::thread::Builder::new()
            .name("tapline-syslog".into())
            .spawn(move || sender.run())
            .map_err(SyslogError::Thread)?;
        Ok(SyslogSink {
            config,
            pid: std::process::id(),
            shared,
        })
    }

    /// The target as given (`tcp://…`).
    pub fn url(&self) -> &str {
        &self.config.target.url
    }

    /// Sent and dropped counts.
    pub fn counters(&self) -> &SyslogCounters {
        &self.shared.counters
    }

    /// Registers the sent and dropped counts with the run's metrics (and so the stats).
    pub fn register_metrics(&self, metrics: &Metrics) {
        let labels = [("target", self.config.target.url.as_str())];
        let shared = self.shared.clone();
        metrics.register(
            "tapline_syslog_sent_total",
            "Syslog messages sent.",
            &labels,
            move || shared.counters.sent.load(Ordering::Relaxed),
        );
        let shared = self.shared.clone();
        metrics.register(
            "tapline_syslog_dropped_total",
            "Syslog messages dropped.",
            &labels,
            move || shared.counters.dropped.load(Ordering::Relaxed),
        );
    }

    /// Messages queued and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().len()
    }
}

impl EventSink for SyslogSink {
    fn emit(&self, event: &Event) {
        if !self.config.kinds.contains(event.kind()) {
            return;
        }
        let message = format_message(event, self.config.format, &self.config.hostname, self.pid);
        let mut queue = self.shared.queue.lock();
        if queue.len() >= self.config.queue {
            drop(queue);
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.shared.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "syslog {}: queue full ({} messages), dropping messages (counted)",
                    self.config.target.url,
                    self.config.queue
                );
            }
            return;
        }
        queue.push_back(message);
        drop(queue);
        self.shared.changed.notify_all();
    }

    fn wants_details(&self, kind: Kind) -> bool {
        self.config.kinds.contains(kind)
    }

    /// Waits up to [`FLUSH_WAIT`] for the queue to be written; what is left is counted as
    /// dropped.
    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut queue = self.shared.queue.lock();
        while !queue.is_empty() {
            if self
                .shared
                .changed
                .wait_until(&mut queue, deadline)
                .timed_out()
            {
                break;
            }
        }
        let left = queue.len();
        if left > 0 {
            queue.clear();
            self.shared
                .counters
                .dropped
                .fetch_add(left as u64, Ordering::Relaxed);
            tracing::warn!(
                "syslog {}: {left} messages not delivered before the stop (counted as dropped)",
                self.config.target.url
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format::bsd_timestamp;
    use super::*;
    use crate::testing::*;

    fn text(event: &Event, format: SyslogFormat) -> String {
        String::from_utf8(format_message(event, format, "box", 42)).unwrap()
    }

    #[test]
    fn rfc5424_alert_carries_flow_plugin_and_fields_as_structured_data() {
        let mut record = record();
        record.fields = serde_json::json!({ "ua": "pcap \"1]\"", "n": 3, "bad name": true });
        assert_eq!(
            text(&event(EventKind::Alert(record)), SyslogFormat::Rfc5424),
            "<12>1 2026-11-21T06:39:45.123456Z box tapline 42 alert \
             [tapline@32473 kind=\"alert\" flow=\"7\" mode=\"proxy\" protocol=\"http\" \
             client=\"127.0.0.1:51234\" server=\"127.0.0.1:7070\" plugin=\"ua-watch\"]\
             [fields@32473 bad_name=\"true\" n=\"3\" ua=\"pcap \\\"1\\]\\\"\"] \
             ALERT ua-watch http 127.0.0.1:51234 → 127.0.0.1:7070 scanner user agent \
             bad name=true n=3 ua=\"pcap \\\"1]\\\"\""
        );
    }

    #[test]
    fn rfc5424_record_without_flow() {
        let mut e = event(EventKind::Record(record()));
        e.flow = None;
        assert_eq!(
            text(&e, SyslogFormat::Rfc5424),
            "<14>1 2026-11-21T06:39:45.123456Z box tapline 42 record \
             [tapline@32473 kind=\"record\" mode=\"proxy\" plugin=\"ua-watch\"]\
             [fields@32473 ua=\"pcap/1.0\"] record ua-watch scanner user agent ua=\"pcap/1.0\""
        );
    }

    #[test]
    fn rfc3164_has_bsd_header_and_tag() {
        assert_eq!(
            text(&event(EventKind::Alert(record())), SyslogFormat::Rfc3164),
            "<12>Nov 21 06:39:45 box tapline[42]: kind=alert flow=7 plugin=ua-watch \
             ALERT ua-watch http 127.0.0.1:51234 → 127.0.0.1:7070 scanner user agent ua=\"pcap/1.0\""
        );
        assert_eq!(
            bsd_timestamp(Timestamp::from_secs_micros(1_772_409_600, 0)),
            "Mar  2 00:00:00"
        );
    }

    #[test]
    fn octet_counting_frames_by_byte_length() {
        let mut out = Vec::new();
        frame_octet_counted("é1".as_bytes(), &mut out);
        frame_octet_counted(b"ab", &mut out);
        assert_eq!(out, "3 é12 ab".as_bytes());
    }

    #[test]
    fn targets_and_kinds_parse() {
        let t: SyslogTarget = "tcp://127.0.0.1:514".parse().unwrap();
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(t.addr.port(), 514);
        assert!("udp://[::1]:5514".parse::<SyslogTarget>().is_ok());
        for bad in ["127.0.0.1:514", "http://h:1", "udp://", "udp://host"] {
            assert!(bad.parse::<SyslogTarget>().is_err(), "{bad}");
        }
        let kinds = parse_kinds::<&str>(&[]).unwrap();
        assert!(kinds.contains(Kind::Alert) && kinds.contains(Kind::Record));
        assert!(!kinds.contains(Kind::FlowEnd));
        let kinds = parse_kinds(&["flow_end", "Alert"]).unwrap();
        assert!(kinds.contains(Kind::FlowEnd) && !kinds.contains(Kind::Record));
        assert!(parse_kinds(&["all"]).unwrap().contains(Kind::Packet));
        let err = parse_kinds(&["flows"]).unwrap_err().to_string();
        assert!(err.contains("flow_start, flow_end"), "{err}");
    }
}
