//! Protocol detection: port hints, forced `--decode PORT=PROTO` mappings, and content sniffing
//! of a flow's first bytes (an HTTP request or status line, a PostgreSQL startup packet, a TLS
//! record).

use tapline_core::Protocol;

use crate::pgsql::untyped_code;

/// Ports whose flows are assumed to carry HTTP/1.x until the bytes say otherwise.
pub const HTTP_PORTS: &[u16] = &[80, 591, 2375, 3000, 5000, 8000, 8008, 8080, 8081, 8888];

/// Ports whose flows are assumed to carry PostgreSQL until the bytes say otherwise.
pub const POSTGRES_PORTS: &[u16] = &[5432];

/// Ports whose flows are assumed to carry TLS.
pub const TLS_PORTS: &[u16] = &[443, 8443];

/// Request methods accepted as the start of an HTTP/1.x request (sniffing and resync).
pub(crate) const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
    b"PURGE",
];

/// How sure a decoder is of its flow's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certainty {
    /// Told so (a mapping proxy's scheme, or `--decode PORT=PROTO`): the bytes are not sniffed.
    Forced,
    /// Guessed from a port: sniffed bytes that clearly say otherwise win.
    Hinted,
}

/// Parses one `--decode PORT=PROTO` value (`5433=postgres`, `8000=http`, `9000=tcp`).
/// `psql`/`pgsql`/`postgresql` are accepted for `postgres`; `tcp`/`raw` turn decoding off.
pub fn parse_decode_override(spec: &str) -> Result<(u16, Protocol), String> {
    let (port, proto) = spec
        .split_once('=')
        .ok_or_else(|| format!("--decode {spec:?}: expected PORT=PROTO, e.g. 5433=postgres"))?;
    let port: u16 = port
        .trim()
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("--decode {spec:?}: {port:?} is not a port number (1-65535)"))?;
    let protocol = match proto.trim().to_ascii_lowercase().as_str() {
        "http" => Protocol::Http,
        "postgres" | "postgresql" | "psql" | "pgsql" => Protocol::Postgres,
        "tcp" | "raw" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        other => {
            return Err(format!(
            "--decode {spec:?}: unknown protocol {other:?} (expected http, postgres, tls or tcp)"
        ))
        }
    };
    Ok((port, protocol))
}

/// The protocol a port suggests, if any.
pub fn port_hint(port: u16) -> Option<Protocol> {
    if HTTP_PORTS.contains(&port) {
        Some(Protocol::Http)
    } else if POSTGRES_PORTS.contains(&port) {
        Some(Protocol::Postgres)
    } else if TLS_PORTS.contains(&port) {
        Some(Protocol::Tls)
    } else {
        None
    }
}

/// What the first bytes of one side say about the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// This protocol, clearly.
    Is(Protocol),
    /// Too few bytes to tell; more may decide.
    NeedMore,
    /// Nothing recognised.
    Unknown,
}

/// Sniffs the first bytes the client sent.
pub fn sniff_client(data: &[u8]) -> Sniff {
    if data.is_empty() {
        return Sniff::NeedMore;
    }
    if data.len() >= 2 && data[0] == 0x16 && data[1] == 0x03 {
        return Sniff::Is(Protocol::Tls);
    }
    match sniff_method(data) {
        Sniff::Unknown => {}
        other => return other,
    }
    if data.len() < 8 {
        // A PostgreSQL startup packet begins with a big-endian length whose first byte is 0.
        return if data[0] == 0 {
            Sniff::NeedMore
        } else {
            Sniff::Unknown
        };
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let code = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if (8..=10_000).contains(&len) && untyped_code(code).is_some() {
        Sniff::Is(Protocol::Postgres)
    } else {
        Sniff::Unknown
    }
}

/// Sniffs the first bytes the server sent (for captures that start mid-connection or
/// protocols where the server speaks first).
pub fn sniff_server(data: &[u8]) -> Sniff {
    const STATUS: &[u8] = b"HTTP/1.";
    let n = data.len().min(STATUS.len());
    if data[..n] != STATUS[..n] {
        return Sniff::Unknown;
    }
    if n < STATUS.len() {
        Sniff::NeedMore
    } else {
        Sniff::Is(Protocol::Http)
    }
}

/// True when `data` starts with a known method followed by a space (or could, given more bytes).
fn sniff_method(data: &[u8]) -> Sniff {
    let mut maybe = false;
    for m in METHODS {
        if data.len() > m.len() {
            if data.starts_with(m) && data[m.len()] == b' ' {
                return Sniff::Is(Protocol::Http);
            }
        } else if m.starts_with(data) {
            maybe = true;
        }
    }
    if maybe {
        Sniff::NeedMore
    } else {
        Sniff::Unknown
    }
}

/// True when `data[at..]` starts with a request method and a space (HTTP resync).
pub(crate) fn starts_request(data: &[u8]) -> bool {
    sniff_method(data) == Sniff::Is(Protocol::Http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides() {
        assert_eq!(
            parse_decode_override("5433=postgres"),
            Ok((5433, Protocol::Postgres))
        );
        assert_eq!(
            parse_decode_override("8000=HTTP"),
            Ok((8000, Protocol::Http))
        );
        assert_eq!(parse_decode_override("9=psql"), Ok((9, Protocol::Postgres)));
        assert_eq!(parse_decode_override("22=tcp"), Ok((22, Protocol::Tcp)));
        for bad in [
            "5433",
            "x=http",
            "0=http",
            "70000=http",
            "80=gopher",
            "=http",
        ] {
            let err = parse_decode_override(bad).unwrap_err();
            assert!(err.starts_with("--decode"), "{bad}: {err}");
        }
    }

    #[test]
    fn port_hints() {
        assert_eq!(port_hint(80), Some(Protocol::Http));
        assert_eq!(port_hint(8080), Some(Protocol::Http));
        assert_eq!(port_hint(5432), Some(Protocol::Postgres));
        assert_eq!(port_hint(22), None);
    }

    #[test]
    fn sniffs_first_bytes() {
        assert_eq!(
            sniff_client(b"GET / HTTP/1.1\r\n"),
            Sniff::Is(Protocol::Http)
        );
        assert_eq!(sniff_client(b"PO"), Sniff::NeedMore);
        assert_eq!(sniff_client(b"GETX"), Sniff::Unknown);
        // SSLRequest and a 3.0 StartupMessage.
        assert_eq!(
            sniff_client(&hex::decode("0000000804d2162f").unwrap()),
            Sniff::Is(Protocol::Postgres)
        );
        assert_eq!(
            sniff_client(&hex::decode("0000002900030000").unwrap()),
            Sniff::Is(Protocol::Postgres)
        );
        assert_eq!(sniff_client(&[0, 0, 0]), Sniff::NeedMore);
        assert_eq!(
            sniff_client(&hex::decode("0000000804d2ffff").unwrap()),
            Sniff::Unknown
        );
        assert_eq!(sniff_client(&[0x16, 3, 1]), Sniff::Is(Protocol::Tls));
        assert_eq!(sniff_client(b"SSH-2.0-OpenSSH"), Sniff::Unknown);
        assert_eq!(
            sniff_server(b"HTTP/1.1 200 OK\r\n"),
            Sniff::Is(Protocol::Http)
        );
        assert_eq!(sniff_server(b"HTT"), Sniff::NeedMore);
        assert_eq!(sniff_server(b"220 smtp"), Sniff::Unknown);
    }
}
