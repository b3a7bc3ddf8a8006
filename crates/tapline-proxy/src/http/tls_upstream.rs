//! Upstream connections over TLS for the exchanges of an intercepted connection: one
//! upstream (the tunnel's target or the mapping's), verified for one name, offering the
//! protocol agreed with the client. The connection opened while the client's handshake was
//! under way serves the first request (or its failure answers it: 502 with the reason);
//! later ones come from the TLS pool or are opened anew.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tapline_tls::rustls::pki_types::ServerName;
use tapline_tls::Interceptor;

use super::upstream::{Pooled, Upstreams};
use crate::conn::UpstreamTls;
use crate::context::Shared;
use crate::errors::UpstreamError;
use crate::tls::handshake;

/// Where an intercepted connection's exchanges get their upstream connections.
pub(crate) struct TlsUpstreams {
    ctx: Arc<Shared>,
    interceptor: Arc<Interceptor>,
    /// The name upstream certificates are verified for (and sent by SNI).
    name: ServerName<'static>,
    /// The protocols offered upstream.
    alpn: Vec<Vec<u8>>,
    /// The upstream's address, when it was reached during the handshake.
    addr: Option<SocketAddr>,
    /// The connection made during the handshake, or why none could be, for the first
    /// request.
    first: Mutex<Option<Result<UpstreamTls, UpstreamError>>>,
}

impl TlsUpstreams {
    /// Upstreams for `name` at `addr` (when known), with the connection or failure of the
    /// handshake as the first.
    pub(crate) fn new(
        ctx: Arc<Shared>,
        interceptor: Arc<Interceptor>,
        name: ServerName<'static>,
        alpn: Vec<Vec<u8>>,
        addr: Option<SocketAddr>,
        first: Result<UpstreamTls, UpstreamError>,
    ) -> Self {
        TlsUpstreams {
            ctx,
            interceptor,
            name,
            alpn,
            addr,
            first: Mutex::new(Some(first)),
        }
    }
}

impl Upstreams for TlsUpstreams {
    type Stream = UpstreamTls;

    async fn address(&self, host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
        match self.addr {
            Some(addr) => Ok(addr),
            None => self.ctx.address(host, port).await,
        }
    }

    async fn get(
        &self,
        addr: SocketAddr,
        fresh: bool,
    ) -> Result<(Pooled<UpstreamTls>, bool), UpstreamError> {
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        if let Some(first) = first {
            let stream = first?;
            return Ok((
                Pooled {
                    stream,
                    buf: BytesMut::new(),
                },
                false,
            ));
        }
        let key = (addr, self.name.clone());
        if !fresh {
            if let Some(conn) = self.ctx.tls_pool.take(&key) {
                return Ok((conn, true));
            }
        }
        let tcp = self.ctx.connect_addr(addr).await?;
        let stream = handshake::connect(
            &self.ctx,
            &self.interceptor,
            tcp,
            self.name.clone(),
            self.alpn.clone(),
        )
        .await
        .map_err(|why| {
            self.ctx.tls_counters.upstream_failed();
            UpstreamError::Handshake(why)
        })?;
        Ok((
            Pooled {
                stream,
                buf: BytesMut::new(),
            },
            false,
        ))
    }

    fn give_back(&self, addr: SocketAddr, conn: Pooled<UpstreamTls>) {
        self.ctx.tls_pool.put_back((addr, self.name.clone()), conn);
    }
}
