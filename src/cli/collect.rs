//! `tapline collect`'s flags: the broker and group to read from, and its outputs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, BrokerArgs, WebArgs};

/// `tapline collect`
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Where to read events from: nats://HOST:PORT/SUBJECT or redis://HOST:PORT/STREAM.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Collectors in the same group share the stream's events (the JetStream durable
    /// consumer, the Redis consumer group).
    #[arg(long, default_value = "tapline-collect", value_name = "NAME")]
    pub group: String,
    /// Broker settings.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Stop by itself after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Stop once no event came for this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_exit: Option<Duration>,
    /// JSON lines on stdout instead of human text.
    #[arg(long)]
    pub json: bool,
    /// JSON lines to this file (stdout keeps human text unless --json or --quiet).
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
    /// The live web view of what is collected.
    #[command(flatten)]
    pub view: WebArgs,
    /// Prometheus metrics on this address (loopback unless given).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// No human output on stdout.
    #[arg(short, long)]
    pub quiet: bool,
}
