//! Where events go, in every mode: stdout and files, syslog, metrics, the web view, and the
//! export to brokers.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{parse_duration, parse_size};

/// Output options shared by proxy and capture.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// JSON lines on stdout instead of human text.
    #[arg(long)]
    pub json: bool,
    /// JSON lines to this file (stdout keeps human text unless --json or --quiet).
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
    /// JSON lines (--json, --output) carry HTTP bodies (up to --body-limit), so the file
    /// can be replayed.
    #[arg(long)]
    pub json_bodies: bool,
    /// Every HTTP exchange to this HAR 1.2 file (heads, bodies up to --body-limit, timings).
    #[arg(long, value_name = "FILE.har")]
    pub har: Option<PathBuf>,
    /// Send alerts and plugin records to syslog: udp://HOST:PORT or tcp://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub syslog: Option<String>,
    /// Syslog message format.
    #[arg(long, value_enum, default_value_t = SyslogFormat::Rfc5424)]
    pub syslog_format: SyslogFormat,
    /// Event kinds sent to syslog, comma-separated (default: alert,record).
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub syslog_events: Vec<String>,
    /// Prometheus metrics on this address (loopback unless given).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// No human output on stdout.
    #[arg(short, long)]
    pub quiet: bool,
    /// The live web view.
    #[command(flatten)]
    pub view: WebArgs,
    /// Export every event to a broker: nats://HOST:PORT/SUBJECT (JetStream) or
    /// redis://HOST:PORT/STREAM (Redis Streams). Repeatable.
    #[arg(long = "export", value_name = "URL")]
    pub export: Vec<String>,
    /// This agent's name in exported events (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub agent_id: Option<String>,
    /// The export's broker settings.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Where exported events wait while a broker is away, a directory per target (default:
    /// tapline-spool-AGENT in the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub export_spool: Option<PathBuf>,
    /// Most bytes spooled per export target; past it the oldest events are dropped (counted).
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub export_spool_max: u64,
    /// How long a clean stop keeps sending queued and spooled events before leaving the rest
    /// in the spool for the next run.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub export_flush_wait: Duration,
}

/// The live web view's options, in every mode.
#[derive(Debug, Args, Clone)]
pub struct WebArgs {
    /// Serve a live web view of the traffic on this address (HOST:PORT, or PORT on
    /// loopback); off loopback --web-token is required.
    #[arg(long, value_name = "ADDR")]
    pub web: Option<String>,
    /// A token every web view request must carry (`?token=` or `Authorization: Bearer`).
    #[arg(long, value_name = "TOKEN")]
    pub web_token: Option<String>,
    /// Rows the web view keeps; older ones leave the page, never the other outputs.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub web_history: usize,
}

impl Default for WebArgs {
    fn default() -> Self {
        WebArgs {
            web: None,
            web_token: None,
            web_history: 10_000,
        }
    }
}

/// Broker settings shared by the export and `tapline collect`.
#[derive(Debug, Args, Clone)]
pub struct BrokerArgs {
    /// The JetStream stream holding the subject (created, covering it, if missing).
    #[arg(long, default_value = tapline_export::broker::DEFAULT_STREAM, value_name = "NAME")]
    pub export_stream: String,
    /// Most entries the broker keeps: Redis XADD MAXLEN ~ N, and the JetStream stream's
    /// message limit when tapline creates it.
    #[arg(long, default_value_t = tapline_export::broker::DEFAULT_MAXLEN, value_name = "N")]
    pub export_maxlen: u64,
}

impl Default for BrokerArgs {
    fn default() -> Self {
        BrokerArgs {
            export_stream: tapline_export::broker::DEFAULT_STREAM.into(),
            export_maxlen: tapline_export::broker::DEFAULT_MAXLEN,
        }
    }
}

/// Syslog message formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SyslogFormat {
    /// RFC 5424 with structured data.
    #[default]
    #[value(name = "5424")]
    Rfc5424,
    /// BSD syslog (RFC 3164).
    #[value(name = "3164")]
    Rfc3164,
}
