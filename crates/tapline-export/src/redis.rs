//! Redis Streams: `XADD … MAXLEN ~ N` pipelined (as Suricata's EVE `xadd` mode), and a
//! consumer group read with `XREADGROUP` and acknowledged with `XACK`.
//!
//! Each entry has one field, `event`, holding the JSON object. A pipelined batch is
//! acknowledged when every `XADD` in it has answered with its entry id.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};

use crate::broker::{BrokerError, Delivery, Pending, Settings};
use crate::target::Target;

/// The entry field that holds the event.
pub const FIELD: &str = "event";
/// How long one request may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Entries delivered to a collector that went away are taken over after this long.
const CLAIM_IDLE: Duration = Duration::from_secs(60);

fn err(e: redis::RedisError) -> BrokerError {
    BrokerError(e.to_string())
}

async fn connect(
    target: &Target,
    settings: &Settings,
) -> Result<MultiplexedConnection, BrokerError> {
    let client = redis::Client::open(format!("redis://{}/", target.address)).map_err(err)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(err)
}

/// Appends to a stream.
pub struct Publisher {
    conn: MultiplexedConnection,
    key: String,
    maxlen: u64,
}

impl Publisher {
    /// Connects.
    pub async fn connect(target: &Target, settings: &Settings) -> Result<Self, BrokerError> {
        Ok(Publisher {
            conn: connect(target, settings).await?,
            key: target.name.clone(),
            maxlen: settings.maxlen,
        })
    }

    /// Every payload as one pipeline of `XADD`s, sent (on the shared connection) when the
    /// returned future is polled, which resolves once all of them answered.
    pub fn send(&mut self, batch: &[Bytes]) -> Pending {
        let mut pipe = redis::pipe();
        for payload in batch {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg(FIELD)
                .arg(payload.as_ref())
                .ignore();
        }
        let mut conn = self.conn.clone();
        Box::pin(async move { pipe.query_async::<()>(&mut conn).await.map_err(err) })
    }
}

/// A member of a consumer group.
pub struct Consumer {
    conn: MultiplexedConnection,
    key: String,
    group: String,
    name: String,
    /// Entries taken over from a collector that went away, not yet handed out.
    claimed: Vec<StreamId>,
}

/// A read entry: its id (to acknowledge) and its event.
pub struct Entry {
    /// The stream entry id.
    pub id: String,
    /// The event's JSON.
    pub payload: Bytes,
}

impl Consumer {
    /// Connects, creates the group (reading from the stream's start) if missing, and takes
    /// over entries another member left unacknowledged for a minute.
    pub async fn connect(
        target: &Target,
        settings: &Settings,
        group: &str,
        name: &str,
    ) -> Result<Self, BrokerError> {
        let mut conn = connect(target, settings).await?;
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&target.name)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(err(e));
            }
        }
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&target.name)
            .arg(group)
            .arg(name)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg("0")
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(Consumer {
            conn,
            key: target.name.clone(),
            group: group.into(),
            name: name.into(),
            claimed: claimed.claimed,
        })
    }

    /// Up to `max` new entries, blocking at most `wait` for them.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Delivery, BrokerError> {
        if !self.claimed.is_empty() {
            return Ok(Delivery::Redis(
                std::mem::take(&mut self.claimed)
                    .into_iter()
                    .map(entry)
                    .collect(),
            ));
        }
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(err)?;
        let entries = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(entry)
            .collect();
        Ok(Delivery::Redis(entries))
    }

    /// Acknowledges entries the outputs have.
    pub async fn ack(&mut self, entries: &[Entry]) -> Result<(), BrokerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.key).arg(&self.group);
        for e in entries {
            cmd.arg(&e.id);
        }
        cmd.query_async::<()>(&mut self.conn).await.map_err(err)
    }
}

/// The entry and its event (empty when it has none: it is acknowledged all the same, so it
/// does not stay pending forever).
fn entry(id: StreamId) -> Entry {
    let payload = match id.map.get(FIELD) {
        Some(Value::BulkString(data)) => Bytes::copy_from_slice(data),
        _ => Bytes::new(),
    };
    Entry { payload, id: id.id }
}
