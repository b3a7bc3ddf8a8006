//! Event export to brokers and the collector's side of it.
//!
//! Agents (`tapline proxy`, `tapline capture`) export every event to NATS JetStream or Redis
//! Streams through an [`ExportSink`]: `emit` only enqueues; a background sender per target
//! batches, publishes, waits for the broker's acknowledgements and retries with backoff;
//! while a broker is away events wait in a bounded queue and then in an on-disk [`spool`].
//! `tapline collect` reads a target as a member of a group through a [`broker::Consumer`].
//!
//! Modules: [`target`] (the URLs), [`broker`] (one face for both brokers over [`nats`] and
//! [`redis`]), [`spool`], `sender` (the background sender and its counters), [`sink`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod nats;
pub mod redis;
mod sender;
pub mod sink;
pub mod spool;
pub mod target;

pub use broker::{BrokerError, Consumer, Delivery, Publisher, Settings};
pub use sink::{ExportConfig, ExportError, ExportSink};
pub use target::{Broker, Target, TargetError};
