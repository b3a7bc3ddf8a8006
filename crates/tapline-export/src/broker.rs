//! One face for both brokers: a [`Publisher`] that sends a batch and hands back a [`Pending`]
//! that resolves once the broker acknowledged all of it (so several batches can be on their
//! way at once), and a [`Consumer`] that fetches batches and acknowledges them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::target::{Broker, Target};
use crate::{nats, redis};

/// A broker operation failed (connect, publish, acknowledgement, read).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(pub String);

/// Broker settings shared by every target.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The JetStream stream that holds the subjects (`--export-stream`).
    pub stream: String,
    /// Most entries kept: Redis `MAXLEN ~` (events), JetStream's `max_messages` (messages of
    /// up to 64 events) when tapline creates the stream (`--export-maxlen`).
    pub maxlen: u64,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

/// The default `--export-stream`.
pub const DEFAULT_STREAM: &str = "TAPLINE";
/// The default `--export-maxlen`.
pub const DEFAULT_MAXLEN: u64 = 1_000_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream: DEFAULT_STREAM.into(),
            maxlen: DEFAULT_MAXLEN,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A sent batch: resolves once the broker acknowledged every payload in it. It makes
/// progress only while polled (spawn it to overlap batches).
pub type Pending = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>>;

/// Sends batches to one target.
pub enum Publisher {
    /// JetStream.
    Nats(nats::Publisher),
    /// Redis Streams.
    Redis(redis::Publisher),
}

impl Publisher {
    /// Connects to the target's broker.
    pub async fn connect(target: &Target, settings: &Settings) -> Result<Self, BrokerError> {
        Ok(match target.broker {
            Broker::Nats => Publisher::Nats(nats::Publisher::connect(target, settings).await?),
            Broker::Redis => Publisher::Redis(redis::Publisher::connect(target, settings).await?),
        })
    }

    /// Sends `batch`; the returned [`Pending`] resolves once the broker acknowledged it all.
    pub async fn send(&mut self, batch: &[Bytes]) -> Result<Pending, BrokerError> {
        match self {
            Publisher::Nats(p) => p.send(batch).await,
            Publisher::Redis(p) => Ok(p.send(batch)),
        }
    }
}

/// Reads one target as a member of a group of collectors.
pub enum Consumer {
    /// A JetStream durable pull consumer.
    Nats(Box<nats::Consumer>),
    /// A Redis consumer group.
    Redis(redis::Consumer),
}

/// A fetched batch, to hand to the outputs and then acknowledge.
pub enum Delivery {
    /// JetStream messages.
    Nats(Vec<nats::Message>),
    /// Redis stream entries.
    Redis(Vec<redis::Entry>),
}

impl Delivery {
    /// Each event's JSON, in order (a JetStream message holds one or more, one per line).
    pub fn payloads(&self) -> Vec<&[u8]> {
        match self {
            Delivery::Nats(m) => m
                .iter()
                .flat_map(|m| m.payload.split(|&b| b == b'\n'))
                .filter(|line| !line.is_empty())
                .collect(),
            Delivery::Redis(e) => e.iter().map(|e| e.payload.as_ref()).collect(),
        }
    }

    /// Whether nothing was delivered.
    pub fn is_empty(&self) -> bool {
        match self {
            Delivery::Nats(m) => m.is_empty(),
            Delivery::Redis(e) => e.is_empty(),
        }
    }
}

impl Consumer {
    /// Joins the group `group` (created if missing) as member `name`.
    pub async fn connect(
        target: &Target,
        settings: &Settings,
        group: &str,
        name: &str,
    ) -> Result<Self, BrokerError> {
        Ok(match target.broker {
            Broker::Nats => Consumer::Nats(Box::new(
                nats::Consumer::connect(target, settings, group).await?,
            )),
            Broker::Redis => {
                Consumer::Redis(redis::Consumer::connect(target, settings, group, name).await?)
            }
        })
    }

    /// Up to `max` events, waiting at most `wait`.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Delivery, BrokerError> {
        match self {
            Consumer::Nats(c) => c.fetch(max, wait).await,
            Consumer::Redis(c) => c.fetch(max, wait).await,
        }
    }

    /// Acknowledges a delivery whose events the outputs have.
    pub async fn ack(&mut self, delivery: &Delivery) -> Result<(), BrokerError> {
        match (self, delivery) {
            (Consumer::Nats(c), Delivery::Nats(m)) => c.ack(m).await,
            (Consumer::Redis(c), Delivery::Redis(e)) => c.ack(e).await,
            _ => Err(BrokerError("a delivery from the other broker".into())),
        }
    }
}
