//! Upstream connections for HTTP exchanges: which address a request goes to, a pooled
//! keep-alive connection or a new one, and giving it back. The retry policy (one fresh
//! connection when a reused one was closed under a request) is the exchange's; this module
//! only does what it asks.
//!
//! [`Upstreams`] is what the driver needs, so the driver is generic over the upstream's byte
//! stream; [`Shared`] serves it over TCP with its pool, `tls_upstream` over TLS.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::context::Shared;
use crate::errors::UpstreamError;

/// An upstream connection and what was read from it but not used yet. The buffer stays with
/// the connection, so a reused one reads into memory it already has.
pub(crate) struct Pooled<S> {
    /// The connection.
    pub(crate) stream: S,
    /// Read and not used yet (empty while the connection is idle).
    pub(crate) buf: BytesMut,
}

/// Where HTTP exchanges get their upstream connections.
pub(crate) trait Upstreams: Send + Sync {
    /// The byte stream to an upstream.
    type Stream: Conn;

    /// The address requests for `host:port` go to.
    fn address(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<SocketAddr, UpstreamError>> + Send;

    /// A connection to `addr`: an idle pooled one unless `fresh`, else a new one; true when
    /// it was reused.
    fn get(
        &self,
        addr: SocketAddr,
        fresh: bool,
    ) -> impl Future<Output = Result<(Pooled<Self::Stream>, bool), UpstreamError>> + Send;

    /// Keeps `conn` for the next request to `addr` (its last response was read whole).
    fn give_back(&self, addr: SocketAddr, conn: Pooled<Self::Stream>);
}

/// Names remembered by [`Remembered`] before the memory starts over.
const MAX_REMEMBERED: usize = 1024;

/// For names with several addresses: the one that accepted a connection.
#[derive(Default)]
pub(crate) struct Remembered(Mutex<HashMap<(String, u16), SocketAddr>>);

impl Upstreams for Shared {
    type Stream = TcpStream;

    /// The only address, or the first that accepts a connection (remembered, so the probe
    /// happens once per name). An address needs no resolving (this runs per request).
    async fn address(&self, host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            let addr = SocketAddr::new(ip, port);
            self.refuse_loop(addr)?;
            return Ok(addr);
        }
        let addrs = self.resolve(host, port).await?;
        if let [addr] = addrs[..] {
            self.refuse_loop(addr)?;
            return Ok(addr);
        }
        let key = (host.to_string(), port);
        let known = self
            .remembered
            .0
            .lock()
            .ok()
            .and_then(|w| w.get(&key).copied());
        if let Some(addr) = known.filter(|a| addrs.contains(a)) {
            self.refuse_loop(addr)?;
            return Ok(addr);
        }
        let (addr, _probe) = self.connect(host, port).await?;
        if let Ok(mut working) = self.remembered.0.lock() {
            if working.len() >= MAX_REMEMBERED {
                working.clear();
            }
            working.insert(key, addr);
        }
        Ok(addr)
    }

    async fn get(
        &self,
        addr: SocketAddr,
        fresh: bool,
    ) -> Result<(Pooled<TcpStream>, bool), UpstreamError> {
        if !fresh {
            if let Some(conn) = self.pool.take(&addr) {
                return Ok((conn, true));
            }
        }
        let stream = self.connect_addr(addr).await?;
        Ok((
            Pooled {
                stream,
                buf: BytesMut::new(),
            },
            false,
        ))
    }

    fn give_back(&self, addr: SocketAddr, conn: Pooled<TcpStream>) {
        self.pool.put_back(addr, conn);
    }
}
