//! Export targets as written on the command line: `nats://HOST:PORT/SUBJECT` or
//! `redis://HOST:PORT/STREAM`.

use std::fmt;
use std::str::FromStr;

/// What went wrong reading a target URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Not `SCHEME://…`, or a scheme other than `nats` and `redis`.
    #[error("'{0}' is not nats://HOST:PORT/SUBJECT or redis://HOST:PORT/STREAM (Kafka is not supported)")]
    Scheme(String),
    /// No `HOST:PORT`.
    #[error("'{0}' has no HOST:PORT")]
    Address(String),
    /// No subject (NATS) or stream key (Redis) after the address.
    #[error("'{0}' names no {1} after HOST:PORT")]
    Name(String, &'static str),
}

/// The broker behind a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// NATS JetStream: events are published on a subject that a stream covers.
    Nats,
    /// Redis Streams: events are appended to a stream key with `XADD`.
    Redis,
}

impl Broker {
    /// What the URL's path names for this broker.
    fn name_kind(self) -> &'static str {
        match self {
            Broker::Nats => "subject",
            Broker::Redis => "stream",
        }
    }
}

/// A broker and where on it events go (or come from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// NATS or Redis.
    pub broker: Broker,
    /// `HOST:PORT`, as given.
    pub address: String,
    /// The NATS subject or the Redis stream key.
    pub name: String,
    /// The URL as given.
    pub url: String,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(url: &str) -> Result<Target, TargetError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| TargetError::Scheme(url.into()))?;
        let broker = match scheme.to_ascii_lowercase().as_str() {
            "nats" => Broker::Nats,
            "redis" => Broker::Redis,
            _ => return Err(TargetError::Scheme(url.into())),
        };
        let (address, name) = rest.split_once('/').unwrap_or((rest, ""));
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(TargetError::Address(url.into()));
        }
        let name = name.trim_end_matches('/');
        if name.is_empty() || name.contains(['/', ' ']) {
            return Err(TargetError::Name(url.into(), broker.name_kind()));
        }
        Ok(Target {
            broker,
            address: address.into(),
            name: name.into(),
            url: url.into(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_brokers() {
        let t: Target = "nats://127.0.0.1:4222/tapline.events".parse().unwrap();
        assert_eq!(
            (t.broker, t.address.as_str(), t.name.as_str()),
            (Broker::Nats, "127.0.0.1:4222", "tapline.events")
        );
        let t: Target = "redis://localhost:6379/tapline/".parse().unwrap();
        assert_eq!((t.broker, t.name.as_str()), (Broker::Redis, "tapline"));
    }

    #[test]
    fn refuses_other_schemes_and_missing_parts() {
        let err = |s: &str| s.parse::<Target>().unwrap_err();
        assert!(matches!(err("kafka://h:9092/t"), TargetError::Scheme(_)));
        assert!(matches!(err("h:4222/t"), TargetError::Scheme(_)));
        assert!(matches!(err("nats://h/t"), TargetError::Address(_)));
        assert!(matches!(err("nats://h:x/t"), TargetError::Address(_)));
        assert_eq!(
            err("redis://h:6379").to_string(),
            "'redis://h:6379' names no stream after HOST:PORT"
        );
        assert!(matches!(err("nats://h:4222/"), TargetError::Name(..)));
    }
}
