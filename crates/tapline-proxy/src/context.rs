//! What every connection handler shares: the pipeline, limits, the pooled upstream client,
//! the proxy's own addresses (loop refusal) and the stop signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tapline_core::{FlowIds, Pipeline};
use tapline_decode::DecodeConfig;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use tapline_tls::rustls::pki_types::ServerName;

use crate::conn::UpstreamTls;
use crate::errors::UpstreamError;
use crate::http::pool::Pool;
use crate::http::Remembered;
use crate::stop::StopSignal;
use crate::tls::{TlsCounters, TlsOptions};

/// The bounds every proxy connection keeps.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long connecting to an upstream may take (504 after it).
    pub connect_timeout: Duration,
    /// A connection with no traffic this long is closed; an upstream that sends no response
    /// head this long gets a 504.
    pub idle_timeout: Duration,
    /// Most client connections open at once (past it, new ones wait in the listen backlog).
    pub max_connections: usize,
    /// Largest request or response head, in bytes.
    pub max_header_size: usize,
    /// Largest body buffered for plugins; longer bodies stream on, flagged truncated.
    pub body_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_header_size: 64 * 1024,
            body_limit: 1 << 20,
        }
    }
}

/// Shared by every connection of one proxy run.
pub(crate) struct Shared {
    pub(crate) pipeline: Pipeline,
    pub(crate) ids: FlowIds,
    pub(crate) limits: Limits,
    /// The addresses the proxy listens on.
    pub(crate) own: Vec<SocketAddr>,
    /// Keep-alive connections to HTTP upstreams.
    pub(crate) pool: Arc<Pool<SocketAddr, TcpStream>>,
    /// Keep-alive TLS connections to HTTPS upstreams, by address and verified name.
    pub(crate) tls_pool: Arc<Pool<(SocketAddr, ServerName<'static>), UpstreamTls>>,
    /// What is done with TLS.
    pub(crate) tls: TlsOptions,
    /// Handshakes so far.
    pub(crate) tls_counters: Arc<TlsCounters>,
    pub(crate) stop: StopSignal,
    /// One permit per open client connection.
    pub(crate) permits: Arc<Semaphore>,
    /// How mapping flows are decoded.
    pub(crate) decode: DecodeConfig,
    /// For names with several addresses: the one that accepted a connection.
    pub(crate) remembered: Remembered,
}

impl Shared {
    pub(crate) fn new(
        pipeline: Pipeline,
        limits: Limits,
        decode: DecodeConfig,
        tls: TlsOptions,
        own: Vec<SocketAddr>,
        stop: StopSignal,
    ) -> Shared {
        let keep = limits.idle_timeout.min(Duration::from_secs(90));
        let pool = Arc::new(Pool::new(keep));
        Pool::reap(&pool);
        let tls_pool = Arc::new(Pool::new(keep));
        Pool::reap(&tls_pool);
        let permits = u32::try_from(limits.max_connections).unwrap_or(u32::MAX) as usize;
        Shared {
            pipeline,
            ids: FlowIds::new(),
            limits,
            own,
            pool,
            tls_pool,
            tls,
            tls_counters: Arc::default(),
            stop,
            permits: Arc::new(Semaphore::new(permits)),
            decode,
            remembered: Remembered::default(),
        }
    }

    /// True when a connection to `addr` would come back to this proxy.
    pub(crate) fn is_own(&self, addr: SocketAddr) -> bool {
        is_self(&self.own, addr)
    }

    /// Resolves `host` (brackets allowed around IPv6) to its addresses, in resolver order.
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let target = || format!("{host}:{port}");
        let lookup = tokio::net::lookup_host((bare, port));
        match tokio::time::timeout(self.limits.connect_timeout, lookup).await {
            Err(_) => Err(UpstreamError::Timeout(format!(
                "resolving {} timed out",
                target()
            ))),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(format!(
                "cannot resolve {}: {e}",
                target()
            ))),
            Ok(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err(UpstreamError::Unreachable(format!(
                        "{} has no address",
                        target()
                    )))
                } else {
                    Ok(addrs)
                }
            }
        }
    }

    /// Resolves, refuses loops, and connects to the first address that answers within the
    /// connect timeout (a name may resolve to `::1` and `127.0.0.1` with only one listening).
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(SocketAddr, TcpStream), UpstreamError> {
        let mut failure = None;
        for addr in self.resolve(host, port).await? {
            self.refuse_loop(addr)?;
            match self.connect_addr(addr).await {
                Ok(stream) => return Ok((addr, stream)),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| UpstreamError::Unreachable(format!("{host}:{port}"))))
    }

    /// Connects to `addr` within the connect timeout, with `TCP_NODELAY`.
    pub(crate) async fn connect_addr(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
        let target = addr.to_string();
        match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(UpstreamError::Timeout(format!(
                "connecting to {target} timed out"
            ))),
            Ok(Err(e)) => Err(UpstreamError::from_io(&target, &e)),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
        }
    }

    /// An error when `addr` is the proxy itself.
    pub(crate) fn refuse_loop(&self, addr: SocketAddr) -> Result<(), UpstreamError> {
        if self.is_own(addr) {
            Err(UpstreamError::Loop(format!(
                "{addr} is this proxy; refusing to proxy to myself"
            )))
        } else {
            Ok(())
        }
    }
}

/// True when connecting to `addr` reaches one of the listeners at `own`: same port, and the
/// same address, or a listener on every address and a local target.
pub(crate) fn is_self(own: &[SocketAddr], addr: SocketAddr) -> bool {
    own.iter().any(|l| {
        l.port() == addr.port()
            && (l.ip() == addr.ip()
                || (l.ip().is_unspecified()
                    && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
                || (addr.ip().is_unspecified() && l.ip().is_loopback()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_recognised() {
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:3180".parse().unwrap(),
            "0.0.0.0:9000".parse().unwrap(),
        ];
        assert!(is_self(&own, "127.0.0.1:3180".parse().unwrap()));
        assert!(is_self(&own, "0.0.0.0:3180".parse().unwrap()));
        assert!(is_self(&own, "127.0.0.1:9000".parse().unwrap()));
        assert!(!is_self(&own, "127.0.0.1:3181".parse().unwrap()));
        assert!(!is_self(&own, "127.0.0.2:3180".parse().unwrap()));
    }
}
