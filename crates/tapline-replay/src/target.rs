//! Where replayed traffic goes (`--to PROTO=HOST:PORT`) and how to talk to it: TLS settings,
//! a forward proxy (`--via`), the `Host` to send, PostgreSQL's user, database, password and
//! SSL mode.

use std::sync::Arc;

use tokio_rustls::rustls::ClientConfig;

/// A `--to` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--to {given}: {reason}")]
pub struct TargetError {
    /// The value given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A protocol `--to` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `http=`
    Http,
    /// `https=`
    Https,
    /// `postgres=` (also `postgresql=`, `psql=`, `pg=`)
    Postgres,
}

/// A `--to` value parsed: the protocol and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The protocol.
    pub proto: Proto,
    /// Host name or address (brackets kept off IPv6 addresses).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses `PROTO=HOST:PORT`.
pub fn parse_target(given: &str) -> Result<Target, TargetError> {
    let err = |reason: &str| TargetError {
        given: given.to_string(),
        reason: reason.to_string(),
    };
    let Some((proto, addr)) = given.split_once('=') else {
        return Err(err("expected PROTO=HOST:PORT (http, https or postgres)"));
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "http" => Proto::Http,
        "https" => Proto::Https,
        "postgres" | "postgresql" | "psql" | "pg" => Proto::Postgres,
        _ => return Err(err("unknown protocol (http, https or postgres)")),
    };
    let (host, port) = split_host_port(addr).ok_or_else(|| err("expected HOST:PORT"))?;
    Ok(Target { proto, host, port })
}

/// `HOST:PORT` or `[V6]:PORT` split, the host without brackets.
pub(crate) fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// PostgreSQL's SSL mode (`--pg-sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Cleartext.
    Disable,
    /// TLS when the server agrees.
    #[default]
    Prefer,
    /// TLS, or the session fails.
    Require,
}

/// What a PostgreSQL session starts with.
#[derive(Clone)]
pub struct PgOptions {
    /// `--pg-user`
    pub user: String,
    /// `--pg-database`
    pub database: String,
    /// From `PGPASSWORD` or `--pg-password-file`.
    pub password: Option<String>,
    /// `--pg-sslmode`
    pub sslmode: SslMode,
}

/// Everything the replay connects to.
#[derive(Clone, Default)]
pub struct Targets {
    /// Where HTTP goes (`http=` or `https=`).
    pub http: Option<Target>,
    /// Where PostgreSQL goes, and as whom.
    pub postgres: Option<(Target, PgOptions)>,
    /// TLS client settings (`https=`, `--pg-sslmode`): trust from `--upstream-ca` or
    /// `--upstream-insecure`.
    pub tls: Option<Arc<ClientConfig>>,
    /// `--via http://HOST:PORT`: HTTP requests go through this forward proxy.
    pub via: Option<(String, u16)>,
    /// `--host NAME`: the `Host` sent instead of the captured one.
    pub host: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = parse_target("postgres=127.0.0.1:5432").unwrap();
        assert_eq!(
            (t.proto, t.host.as_str(), t.port),
            (Proto::Postgres, "127.0.0.1", 5432)
        );
        let t = parse_target("https=[::1]:8443").unwrap();
        assert_eq!((t.proto, t.host.as_str()), (Proto::Https, "::1"));
        assert!(parse_target("ftp=h:21")
            .unwrap_err()
            .reason
            .contains("unknown"));
        assert!(parse_target("http=h").is_err());
        assert!(parse_target("h:80").is_err());
    }
}
