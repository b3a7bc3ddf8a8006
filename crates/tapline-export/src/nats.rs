//! NATS JetStream: publishing with acknowledgements, and a durable pull consumer.
//!
//! Both sides make sure the stream exists (`--export-stream`; created with file storage and at
//! most `--export-maxlen` messages when missing) and covers the subject (added to an existing
//! stream's subjects when it does not). A message carries up to 64 events as JSON lines (one
//! per line, at most 512 KiB unless one event is larger): JetStream's cost is per message, so
//! this multiplies the events a server stores per second. A batch is published in full first
//! (the client pipelines the messages on one connection), then its acknowledgements are
//! awaited; any error fails the whole batch, which the sender retries.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::broker::{BrokerError, Delivery, Pending, Settings};
use crate::target::Target;

/// How long one request to the server (stream lookup, an acknowledgement) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

fn err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError(e.to_string())
}

/// Connects and returns a JetStream context whose stream covers the target's subject.
async fn context(target: &Target, settings: &Settings) -> Result<jetstream::Context, BrokerError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(target.address.as_str())
        .await
        .map_err(err)?;
    let mut js = jetstream::new(client);
    js.set_timeout(REQUEST_TIMEOUT);
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: settings.stream.clone(),
            subjects: vec![target.name.clone()],
            storage: stream::StorageType::File,
            max_messages: i64::try_from(settings.maxlen).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await
        .map_err(err)?;
    let mut config = stream.info().await.map_err(err)?.config.clone();
    if !config.subjects.iter().any(|s| covers(s, &target.name)) {
        config.subjects.push(target.name.clone());
        js.update_stream(config).await.map_err(|e| {
            BrokerError(format!(
                "stream {} does not cover subject {} and cannot be made to: {e}",
                settings.stream, target.name
            ))
        })?;
    }
    Ok(js)
}

/// Whether the subject filter `filter` (with `*` and `>` wildcards) matches `subject`.
fn covers(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Most events in one message.
pub const EVENTS_PER_MESSAGE: usize = 64;
/// Most bytes in one message of several events (half the server's default `max_payload`).
const MESSAGE_BYTES: usize = 512 << 10;

/// The first events of `payloads` as one message, one JSON line each (at least one event,
/// at most [`EVENTS_PER_MESSAGE`], within [`MESSAGE_BYTES`] unless one event is larger), and
/// how many it holds.
fn pack(payloads: &[Bytes]) -> (Bytes, usize) {
    let mut n = 0;
    let mut len = 0;
    for p in payloads.iter().take(EVENTS_PER_MESSAGE) {
        if n > 0 && len + p.len() + 1 > MESSAGE_BYTES {
            break;
        }
        n += 1;
        len += p.len() + 1;
    }
    let mut message = Vec::with_capacity(len);
    for p in &payloads[..n] {
        message.extend_from_slice(p);
        message.push(b'\n');
    }
    (message.into(), n)
}

/// Publishes to a subject and waits for JetStream's acknowledgements.
pub struct Publisher {
    js: jetstream::Context,
    subject: async_nats::Subject,
}

impl Publisher {
    /// Connects and makes sure the stream exists.
    pub async fn connect(target: &Target, settings: &Settings) -> Result<Self, BrokerError> {
        Ok(Publisher {
            js: context(target, settings).await?,
            subject: target.name.clone().into(),
        })
    }

    /// Publishes every payload; the acknowledgements are awaited by the returned future.
    pub async fn send(&mut self, batch: &[Bytes]) -> Result<Pending, BrokerError> {
        let mut acks = Vec::with_capacity(batch.len() / EVENTS_PER_MESSAGE + 1);
        let mut rest = batch;
        while !rest.is_empty() {
            let (message, n) = pack(rest);
            rest = &rest[n..];
            acks.push(
                self.js
                    .publish(self.subject.clone(), message)
                    .await
                    .map_err(err)?,
            );
        }
        Ok(Box::pin(async move {
            for ack in acks {
                ack.await.map_err(err)?;
            }
            Ok(())
        }))
    }
}

/// A durable pull consumer: collectors with the same group share the stream's messages.
pub struct Consumer {
    consumer: consumer::Consumer<consumer::pull::Config>,
}

/// A fetched message, acknowledged later.
pub type Message = jetstream::Message;

impl Consumer {
    /// Connects, makes sure the stream and the durable consumer `group` exist.
    pub async fn connect(
        target: &Target,
        settings: &Settings,
        group: &str,
    ) -> Result<Self, BrokerError> {
        let js = context(target, settings).await?;
        let stream = js.get_stream(&settings.stream).await.map_err(err)?;
        let consumer = stream
            .get_or_create_consumer(
                group,
                consumer::pull::Config {
                    durable_name: Some(group.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    filter_subject: target.name.clone(),
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(err)?;
        Ok(Consumer { consumer })
    }

    /// Up to `max` messages, waiting at most `wait` for them.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Delivery, BrokerError> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(err)?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(err)?);
        }
        Ok(Delivery::Nats(messages))
    }

    /// Acknowledges messages the outputs have.
    pub async fn ack(&mut self, messages: &[Message]) -> Result<(), BrokerError> {
        for message in messages {
            message.ack().await.map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn packs_events_as_lines_within_the_bounds() {
        use super::{pack, Bytes, EVENTS_PER_MESSAGE, MESSAGE_BYTES};
        let small: Vec<Bytes> = (0..100)
            .map(|i| Bytes::from(format!("{{\"n\":{i}}}")))
            .collect();
        let (message, n) = pack(&small);
        assert_eq!(n, EVENTS_PER_MESSAGE);
        assert_eq!(message.split(|&b| b == b'\n').count(), n + 1);
        assert!(message.starts_with(b"{\"n\":0}\n{\"n\":1}\n"));
        let big = vec![Bytes::from(vec![b'x'; MESSAGE_BYTES]); 3];
        assert_eq!(
            pack(&big).1,
            1,
            "one event over the bound still goes, alone"
        );
    }

    #[test]
    fn subject_filters() {
        assert!(covers("tapline.events", "tapline.events"));
        assert!(covers("tapline.>", "tapline.events.a"));
        assert!(covers("tapline.*", "tapline.events"));
        assert!(!covers("tapline.*", "tapline.events.a"));
        assert!(!covers("other", "tapline"));
        assert!(!covers("tapline.events", "tapline"));
    }
}
