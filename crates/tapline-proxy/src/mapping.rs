//! Mapping proxy specs: `LISTEN=SCHEME://HOST:PORT`, as given to `--proxy` / `--proxy-proto`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use tapline_core::Protocol;

/// What a mapping proxy does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Raw TCP relay (`tcp`).
    Tcp,
    /// Raw relay of a PostgreSQL session, decoded into messages (`psql`, `postgres`, `postgresql`).
    Postgres,
    /// Raw relay of TLS bytes (`https`); opaque to tapline.
    Tls,
    /// HTTP reverse proxy whose requests go through the HTTP hooks (`http`).
    Http,
}

impl Scheme {
    /// The protocol flows of this mapping carry.
    pub fn protocol(self) -> Protocol {
        match self {
            Scheme::Tcp => Protocol::Tcp,
            Scheme::Postgres => Protocol::Postgres,
            Scheme::Tls => Protocol::Tls,
            Scheme::Http => Protocol::Http,
        }
    }

    fn parse(s: &str) -> Option<Scheme> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Scheme::Tcp,
            "psql" | "postgres" | "postgresql" => Scheme::Postgres,
            "https" | "tls" => Scheme::Tls,
            "http" => Scheme::Http,
            _ => return None,
        })
    }
}

/// One mapping proxy: where it listens and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingSpec {
    /// The address to listen on (host defaults to 127.0.0.1).
    pub listen: SocketAddr,
    /// What the mapping does.
    pub scheme: Scheme,
    /// The scheme as written (`psql`, `postgresql`, …), for messages.
    pub scheme_name: String,
    /// The upstream host (name or IP, without brackets).
    pub host: String,
    /// The upstream port.
    pub port: u16,
    /// The spec as written, for messages.
    pub text: String,
}

impl MappingSpec {
    /// The upstream as `host:port` (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for MappingSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a mapping spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `=` between LISTEN and the target.
    #[error("expected LISTEN=SCHEME://HOST:PORT (e.g. 9098=psql://127.0.0.1:5432)")]
    Shape,
    /// LISTEN is neither a port nor an address with a port.
    #[error("listen side '{0}' is not a port or ADDR:PORT")]
    Listen(String),
    /// The target has no `SCHEME://`.
    #[error("target '{0}' has no SCHEME:// (tcp, psql, postgres, postgresql, http, https)")]
    NoScheme(String),
    /// The scheme is not one tapline proxies.
    #[error("unknown scheme '{0}' (expected tcp, psql, postgres, postgresql, http or https)")]
    Scheme(String),
    /// The target's host or port is missing or malformed.
    #[error("target '{0}' is not HOST:PORT with a port 1-65535")]
    Target(String),
}

impl FromStr for MappingSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let (listen, target) = text.trim().split_once('=').ok_or(SpecError::Shape)?;
        let listen = parse_listen(listen.trim())?;
        let target = target.trim();
        let (scheme, rest) = target
            .split_once("://")
            .ok_or_else(|| SpecError::NoScheme(target.to_string()))?;
        let scheme_name = scheme.to_ascii_lowercase();
        let scheme = Scheme::parse(scheme).ok_or_else(|| SpecError::Scheme(scheme.to_string()))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) =
            split_host_port(authority).ok_or_else(|| SpecError::Target(rest.to_string()))?;
        if port == 0 {
            return Err(SpecError::Target(rest.to_string()));
        }
        Ok(MappingSpec {
            listen,
            scheme,
            scheme_name,
            host,
            port,
            text: text.trim().to_string(),
        })
    }
}

/// `9098`, `127.0.0.1:9098`, `[::1]:9098`, `localhost:9098`.
fn parse_listen(s: &str) -> Result<SocketAddr, SpecError> {
    let bad = || SpecError::Listen(s.to_string());
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match split_host_port(s) {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        }
        _ => Err(bad()),
    }
}

/// Splits `host:port` or `[v6]:port`; the host must be non-empty and free of spaces and slashes.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    let port = port.parse::<u16>().ok()?;
    valid_host.then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MappingSpec, SpecError> {
        s.parse()
    }

    #[test]
    fn port_only_listens_on_loopback() {
        let m = parse("9098=psql://127.0.0.1:5432").unwrap();
        assert_eq!(m.listen, "127.0.0.1:9098".parse().unwrap());
        assert_eq!(m.scheme, Scheme::Postgres);
        assert_eq!(m.authority(), "127.0.0.1:5432");
        assert_eq!(m.scheme.protocol(), Protocol::Postgres);
    }

    #[test]
    fn every_scheme_alias_is_known() {
        for (s, scheme) in [
            ("tcp", Scheme::Tcp),
            ("psql", Scheme::Postgres),
            ("postgres", Scheme::Postgres),
            ("PostgreSQL", Scheme::Postgres),
            ("http", Scheme::Http),
            ("https", Scheme::Tls),
        ] {
            assert_eq!(parse(&format!("1={s}://h:1")).unwrap().scheme, scheme);
        }
    }

    #[test]
    fn listen_takes_addresses_and_v6() {
        assert_eq!(
            parse("0.0.0.0:80=tcp://db.local:5432").unwrap().listen,
            "0.0.0.0:80".parse().unwrap()
        );
        let m = parse("[::1]:8080=http://[::1]:7070/").unwrap();
        assert_eq!(m.listen, "[::1]:8080".parse().unwrap());
        assert_eq!(m.host, "::1");
        assert_eq!(m.authority(), "[::1]:7070");
        assert_eq!(
            parse("localhost:81=tcp://a:1").unwrap().listen,
            "127.0.0.1:81".parse().unwrap()
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert_eq!(parse("9098"), Err(SpecError::Shape));
        assert_eq!(parse("abc=tcp://h:1"), Err(SpecError::Listen("abc".into())));
        assert_eq!(
            parse("70000=tcp://h:1"),
            Err(SpecError::Listen("70000".into()))
        );
        assert_eq!(
            parse("1=127.0.0.1:5432"),
            Err(SpecError::NoScheme("127.0.0.1:5432".into()))
        );
        assert_eq!(parse("1=ftp://h:1"), Err(SpecError::Scheme("ftp".into())));
        assert_eq!(parse("1=tcp://h"), Err(SpecError::Target("h".into())));
        assert_eq!(parse("1=tcp://h:0"), Err(SpecError::Target("h:0".into())));
        assert_eq!(parse("1=tcp://:5"), Err(SpecError::Target(":5".into())));
        assert_eq!(
            parse("1=tcp://a b:5"),
            Err(SpecError::Target("a b:5".into()))
        );
        assert!(parse("1=tcp://::1:5").is_err());
    }
}
