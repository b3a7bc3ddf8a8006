//! `CONNECT host:port` on the forward proxy: connect upstream, answer 200, then relay the
//! tunnel's bytes as their own flow (protocol `tls` when the client's first byte opens a TLS
//! handshake record, else `tcp`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tapline_core::{Chunk, FlowEnd, FlowStats, Protocol, Route, Side};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{self, ProxyBody};
use crate::context::Shared;
use crate::flows::OpenFlow;
use crate::http_convert::{response_from, short_response};
use crate::relay::{end_of, relay};
use crate::stop::Phase;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Bytes read to learn who speaks first.
const FIRST_READ: usize = 16 * 1024;

/// Answers a CONNECT request; on success the tunnel runs on its own task, holding `permit`.
pub(crate) async fn handle(
    ctx: &Arc<Shared>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| Some((a.host().to_string(), a.port_u16()?)))
    else {
        return response_from(&short_response(
            400,
            "tapline: CONNECT needs a host:port target",
        ));
    };
    let (addr, server) = match ctx.connect(&host, port).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::debug!("CONNECT {host}:{port}: {}", e.message());
            return response_from(&e.response());
        }
    };
    let upgrade = hyper::upgrade::on(req);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        match upgrade.await {
            Ok(upgraded) => tunnel(&ctx, peer, addr, TokioIo::new(upgraded), server).await,
            Err(e) => tracing::debug!("CONNECT {addr}: client left before the tunnel: {e}"),
        }
    });
    Response::new(body::empty())
}

async fn tunnel<C>(
    ctx: &Shared,
    peer: SocketAddr,
    addr: SocketAddr,
    mut client: C,
    mut server: TcpStream,
) where
    C: AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let first = first_chunk(ctx, &mut client, &mut server).await;
    let protocol = match &first {
        Ok(Some(c)) if c.from == Side::Client && c.data.first() == Some(&TLS_HANDSHAKE) => {
            Protocol::Tls
        }
        _ => Protocol::Tcp,
    };
    let open = OpenFlow::start(&ctx.pipeline, &ctx.ids, protocol, Route::Tunnel, peer, addr).await;
    let (stats, end) = match first {
        Ok(first) => relay(ctx, open.flow(), client, server, first, None).await,
        Err(end) => (FlowStats::default(), end),
    };
    open.end(&ctx.pipeline, stats, end).await;
}

/// Waits for whichever side speaks first. `Ok(None)` when a side closed without a byte.
async fn first_chunk<C: AsyncRead + Unpin>(
    ctx: &Shared,
    client: &mut C,
    server: &mut TcpStream,
) -> Result<Option<Chunk>, FlowEnd> {
    let mut cbuf = vec![0u8; FIRST_READ];
    let mut sbuf = vec![0u8; FIRST_READ];
    let (from, read) = tokio::select! {
        r = client.read(&mut cbuf) => (Side::Client, r),
        r = server.read(&mut sbuf) => (Side::Server, r),
        _ = tokio::time::sleep(ctx.limits.idle_timeout) => return Err(FlowEnd::Timeout),
        _ = ctx.stop.reached(Phase::Forced) => return Err(FlowEnd::Shutdown),
    };
    let buf = if from == Side::Client { cbuf } else { sbuf };
    match read {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(Chunk {
            from,
            data: Bytes::copy_from_slice(&buf[..n]),
        })),
        Err(e) => Err(end_of(e)),
    }
}
