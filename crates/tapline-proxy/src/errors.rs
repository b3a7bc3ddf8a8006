//! What can go wrong: setting the proxy up ([`ProxyError`]) and reaching an upstream
//! ([`UpstreamError`], answered with 502/504/508).

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tapline_core::{Headers, HttpResponse};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listen address is busy or not allowed.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener (`--proxy-address`, `--proxy SPEC`).
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Two listeners were given the same address.
    #[error("{what} and {other} both listen on {addr}")]
    DuplicateListen {
        /// The address.
        addr: SocketAddr,
        /// The second listener.
        what: String,
        /// The first listener.
        other: String,
    },
    /// A mapping's upstream host does not resolve.
    #[error("--proxy '{spec}': cannot resolve {authority}: {reason}")]
    Resolve {
        /// The mapping as written.
        spec: String,
        /// Its upstream.
        authority: String,
        /// What the resolver said.
        reason: String,
    },
    /// A mapping forwards to one of the proxy's own listeners.
    #[error("--proxy '{spec}' forwards to {target}, which is tapline's own listener (a loop)")]
    Loop {
        /// The mapping as written.
        spec: String,
        /// The upstream address.
        target: SocketAddr,
    },
}

impl ProxyError {
    /// True for mistakes in the configuration (exit 2), false for the environment (exit 1).
    pub fn is_config(&self) -> bool {
        !matches!(self, ProxyError::Bind { .. })
    }
}

/// Why an upstream could not be used for a request or tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// Resolving or connecting failed, or the connection broke (502).
    Unreachable(String),
    /// Connecting or waiting for the response took too long (504).
    Timeout(String),
    /// The target is the proxy itself (508).
    Loop(String),
    /// The TLS handshake with the upstream failed (502); the client's connection ends as an
    /// error with this reason.
    Handshake(String),
}

impl UpstreamError {
    /// From a failed connect or an I/O error on the upstream connection.
    pub(crate) fn from_io(target: &str, e: &io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            UpstreamError::Timeout(format!("connecting to {target} timed out"))
        } else {
            UpstreamError::Unreachable(format!("cannot reach {target}: {e}"))
        }
    }

    /// The status the client gets.
    pub(crate) fn status(&self) -> u16 {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Handshake(_) => 502,
            UpstreamError::Timeout(_) => 504,
            UpstreamError::Loop(_) => 508,
        }
    }

    /// What went wrong, in a few words.
    pub(crate) fn message(&self) -> &str {
        match self {
            UpstreamError::Unreachable(m)
            | UpstreamError::Timeout(m)
            | UpstreamError::Loop(m)
            | UpstreamError::Handshake(m) => m,
        }
    }

    /// The short response the client gets.
    pub(crate) fn response(&self) -> HttpResponse {
        short_response(self.status(), &format!("tapline: {}", self.message()))
    }
}

/// A short plain-text response the proxy answers with itself (errors, refusals).
pub(crate) fn short_response(status: u16, text: &str) -> HttpResponse {
    HttpResponse::new(
        status,
        Headers(vec![(
            "Content-Type".into(),
            "text/plain; charset=utf-8".into(),
        )]),
        Bytes::from(format!("{text}\n")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_gateway_statuses() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(UpstreamError::from_io("h:1", &refused).status(), 502);
        let slow = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(UpstreamError::from_io("h:1", &slow).status(), 504);
        let resp = UpstreamError::Timeout("slow".into()).response();
        assert_eq!(resp.status, 504);
        assert_eq!(&resp.body[..], b"tapline: slow\n");
    }
}
