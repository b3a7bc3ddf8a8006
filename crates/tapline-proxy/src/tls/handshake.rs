//! The handshakes of an intercepted connection: reading the client's hello (keeping its
//! bytes, for connections that turn out not to be intercepted), completing the client's
//! handshake with a minted leaf, and opening TLS to the upstream. Each is bounded by the
//! connect timeout.

use std::sync::Arc;

use tapline_core::FlowEnd;
use tapline_tls::rustls::pki_types::ServerName;
use tapline_tls::{ClientHelloInfo, Hello, HelloReader, Interceptor};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::{StartHandshake, TlsConnector};

use crate::conn::{ClientTls, UpstreamTls};
use crate::context::Shared;
use crate::relay::end_of;

/// The protocol tapline serves HTTP with (HTTP/2 is not offered until it is served).
pub(crate) const HTTP1: &[u8] = b"http/1.1";
/// Bytes read per call while a hello comes in.
const HELLO_READ: usize = 16 * 1024;

/// What a client opened with.
pub(crate) enum Opening {
    /// A whole TLS hello (the reader keeps it, and every byte read).
    Hello(Box<HelloReader>, ClientHelloInfo),
    /// Bytes that are no TLS hello.
    NotTls(Vec<u8>),
    /// A TLS hello rustls rejects, or none within the bounds.
    Invalid(String, Vec<u8>),
    /// The client went away (or stayed silent) first.
    Ended(FlowEnd),
}

/// Reads a client's first bytes until they are a whole hello or clearly none; `first`
/// holds what was already read.
pub(crate) async fn read_hello(ctx: &Shared, client: &mut TcpStream, first: &[u8]) -> Opening {
    let mut reader = HelloReader::new();
    let mut verdict = if first.is_empty() {
        Hello::Incomplete
    } else {
        reader.feed(first)
    };
    let mut buf = vec![0u8; HELLO_READ];
    let deadline = tokio::time::Instant::now() + ctx.limits.connect_timeout;
    while verdict == Hello::Incomplete {
        let read = tokio::time::timeout_at(deadline, client.read(&mut buf)).await;
        match read {
            Err(_) => return Opening::Ended(FlowEnd::Timeout),
            Ok(Ok(0)) => return Opening::Ended(FlowEnd::Fin),
            Ok(Ok(n)) => verdict = reader.feed(&buf[..n]),
            Ok(Err(e)) => return Opening::Ended(end_of(e)),
        }
    }
    match verdict {
        Hello::Client(info) => Opening::Hello(Box::new(reader), info),
        Hello::NotTls => Opening::NotTls(reader.raw().to_vec()),
        Hello::Invalid(why) => Opening::Invalid(why, reader.raw().to_vec()),
        Hello::Incomplete => unreachable!("the loop reads until the hello is decided"),
    }
}

/// Completes the client's handshake: a leaf for `names`, `alpn` agreed if offered.
pub(crate) async fn accept(
    ctx: &Shared,
    interceptor: &Interceptor,
    reader: Box<HelloReader>,
    client: TcpStream,
    names: &[&str],
    alpn: Option<&[u8]>,
) -> Result<ClientTls, String> {
    let config = interceptor
        .acceptor(names, alpn)
        .map_err(|e| e.to_string())?;
    let Some(accepted) = reader.into_accepted() else {
        return Err("no TLS hello".into());
    };
    let handshake = StartHandshake::from_parts(accepted, client).into_stream(config);
    match tokio::time::timeout(ctx.limits.connect_timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake with the client failed: {e}")),
        Err(_) => Err("TLS handshake with the client timed out".into()),
    }
}

/// Opens TLS to the upstream on `tcp`, verified for `name`, offering `alpn`.
pub(crate) async fn connect(
    ctx: &Shared,
    interceptor: &Arc<Interceptor>,
    tcp: TcpStream,
    name: ServerName<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<UpstreamTls, String> {
    let shown = name.to_str().into_owned();
    let connector = TlsConnector::from(interceptor.connector(alpn));
    match tokio::time::timeout(ctx.limits.connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake with upstream {shown} failed: {e}")),
        Err(_) => Err(format!("TLS handshake with upstream {shown} timed out")),
    }
}

/// The protocols offered upstream for a client that offered `offered`: the same, without
/// those tapline does not serve yet (HTTP/2, HTTP/3); `http/1.1` when that leaves none of an
/// HTTP client's.
pub(crate) fn upstream_offer(offered: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let served: Vec<Vec<u8>> = offered
        .iter()
        .filter(|p| !(p.as_slice() == b"h2" || p.as_slice() == b"h2c" || p.starts_with(b"h3")))
        .cloned()
        .collect();
    if served.is_empty() && !offered.is_empty() {
        vec![HTTP1.to_vec()]
    } else {
        served
    }
}

/// The protocol agreed with the client: what the upstream agreed, when the client offered
/// it; else (an upstream without ALPN, or none) `http/1.1` when offered: tapline speaks
/// HTTP/1.1 on both legs itself.
pub(crate) fn client_protocol(
    hello: &ClientHelloInfo,
    upstream: Option<Option<&[u8]>>,
) -> Option<Vec<u8>> {
    match upstream {
        Some(Some(agreed)) if hello.offered(agreed) => Some(agreed.to_vec()),
        _ => hello.offered(HTTP1).then(|| HTTP1.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_is_never_offered_upstream() {
        let v = |s: &[&str]| s.iter().map(|p| p.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(upstream_offer(&v(&["h2", "http/1.1"])), v(&["http/1.1"]));
        assert_eq!(upstream_offer(&v(&["h2"])), v(&["http/1.1"]));
        assert_eq!(upstream_offer(&v(&["postgresql"])), v(&["postgresql"]));
        assert!(upstream_offer(&[]).is_empty());
        let hello = ClientHelloInfo {
            sni: None,
            alpn: v(&["h2", "http/1.1"]),
        };
        assert_eq!(
            client_protocol(&hello, Some(Some(b"http/1.1"))),
            Some(HTTP1.to_vec())
        );
        assert_eq!(client_protocol(&hello, Some(None)), Some(HTTP1.to_vec()));
        assert_eq!(client_protocol(&hello, None), Some(HTTP1.to_vec()));
        assert_eq!(client_protocol(&ClientHelloInfo::default(), None), None);
    }
}
