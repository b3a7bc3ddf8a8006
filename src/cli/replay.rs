//! `tapline replay`'s flags: what to read, where to send it, and how.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{parse_duration, OutputArgs, PluginArgs};

/// `tapline replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The traffic: a pcap/pcapng file, tapline JSON lines (.jsonl) or a HAR file (.har).
    #[arg(short = 'r', long, value_name = "FILE")]
    pub read: PathBuf,
    /// Where to send it: http=HOST:PORT, https=HOST:PORT, postgres=HOST:PORT (repeatable,
    /// one per protocol).
    #[arg(long = "to", value_name = "PROTO=HOST:PORT", required = true)]
    pub to: Vec<String>,
    /// PostgreSQL user to log in as.
    #[arg(long, env = "PGUSER", value_name = "USER")]
    pub pg_user: Option<String>,
    /// PostgreSQL database (default: the user's name).
    #[arg(long, env = "PGDATABASE", value_name = "NAME")]
    pub pg_database: Option<String>,
    /// A file whose first line is the PostgreSQL password (else PGPASSWORD).
    #[arg(long, value_name = "FILE")]
    pub pg_password_file: Option<PathBuf>,
    /// TLS to PostgreSQL.
    #[arg(long, value_enum, default_value_t = PgSslMode::Prefer)]
    pub pg_sslmode: PgSslMode,
    /// Send this Host instead of the captured one (also the TLS server name).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Send HTTP requests through this forward proxy (http://HOST:PORT), in absolute form.
    #[arg(long, value_name = "URL")]
    pub via: Option<String>,
    /// Trust the CAs in this PEM file for https= and PostgreSQL TLS (repeatable).
    #[arg(long, value_name = "FILE", conflicts_with = "upstream_insecure")]
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify the target's certificate.
    #[arg(long)]
    pub upstream_insecure: bool,
    /// N times faster than captured, or max (no waiting).
    #[arg(long, default_value = "1", value_name = "N|max")]
    pub speed: tapline_replay::Speed,
    /// Replay at most this many requests / PostgreSQL units, in capture order.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Replay only PostgreSQL units with a statement matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub filter_sql: Option<String>,
    /// Replay only HTTP requests whose path matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub filter_path: Option<String>,
    /// Write the comparison as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Exit 1 when any exchange differs or failed.
    #[arg(long)]
    pub fail_on_diff: bool,
    /// Longest wait for a connection or an answer.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// BPF filter applied while reading a capture file.
    #[arg(short = 'f', long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Plugins and decoding.
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// Where the replayed events go (stdout shows them only with --json).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--pg-sslmode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PgSslMode {
    /// Cleartext.
    Disable,
    /// TLS when the server agrees.
    #[default]
    Prefer,
    /// TLS or fail.
    Require,
}
