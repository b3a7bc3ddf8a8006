//! HTTP/1 serving for the forward proxy (absolute-form requests, `CONNECT`), `http`
//! mappings (reverse proxy to one upstream) and intercepted TLS (tunnels and `https`
//! mappings, decrypted). Every request goes through the request hooks, an upstream
//! connection (pooled), then the response hooks; bodies stream in their own framing unless
//! a hook reads them.
//!
//! Layers, outside in: [`serve`] takes a plain client connection, [`exchanges`] any client
//! connection (TLS too) and ends it (tunnel, relay after a protocol switch, or close); the
//! `driver` is its one I/O loop, generic over the client's and the upstream's byte streams;
//! the `exchange` machine decides everything about HTTP/1 without doing I/O (with
//! `exchange::apply` writing heads after the hooks); `target` says where a request goes and
//! `upstream` gets connections to it (`tls_upstream` over TLS). The proxy speaks HTTP/1
//! itself rather than through hyper: one task per client connection, heads parsed in place,
//! no header maps (ARCHITECTURE.md says why).

mod driver;
mod exchange;
mod io;
pub(crate) mod pool;
mod target;
mod tls_upstream;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tapline_core::{Chunk, Dispatch, FlowEnd, FlowStats, Side, TlsInfo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) use target::Upstream;
pub(crate) use tls_upstream::TlsUpstreams;
pub(crate) use upstream::{Remembered, Upstreams};

use crate::conn::Conn;
use crate::context::Shared;
use crate::flows::OpenFlow;
use crate::relay::relay;
use crate::stop::Phase;
use driver::{Driver, Ending};

/// Serves one plain client connection (forward proxy or `http` mapping) until it closes or
/// the run stops; a CONNECT becomes a tunnel.
pub(crate) async fn serve(
    ctx: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    upstream: Upstream,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    // Boxed, as the tunnel below: a connection that became a tunnel gives the exchange's
    // memory back.
    let tunnel = Box::pin(exchanges(
        &ctx,
        ctx.clone(),
        stream,
        peer,
        upstream,
        None,
        Bytes::new(),
    ))
    .await;
    if let Some((client, target, early)) = tunnel {
        // Boxed: the tunnel's future (TLS interception included) is only allocated for
        // tunnels, so a keep-alive client's task stays small.
        Box::pin(crate::connect::tunnel(&ctx, peer, &target, client, early)).await;
    }
    drop(permit);
}

/// Serves HTTP exchanges on `client` (plain, or TLS tapline terminated, with `tls` saying
/// how) with upstream connections from `upstreams`, until the connection closes, the run
/// stops or the client asks for a tunnel: then the connection, the tunnel's target and the
/// bytes sent after the request are returned. `early` holds request bytes already read.
pub(crate) async fn exchanges<C: Conn, U: Upstreams>(
    ctx: &Arc<Shared>,
    upstreams: Arc<U>,
    client: C,
    peer: SocketAddr,
    upstream: Upstream,
    tls: Option<Arc<TlsInfo>>,
    early: Bytes,
) -> Option<(C, String, Bytes)> {
    let mut driver = Driver::new(ctx.clone(), upstreams, client, peer, upstream, tls, early);
    let stop = ctx.stop.clone();
    let outcome = tokio::select! {
        step = driver.run() => Some(step),
        _ = stop.reached(Phase::Forced) => None,
    };
    let step = match outcome {
        None => {
            Box::pin(driver.forced()).await;
            return None;
        }
        Some(None) => return None,
        Some(Some(step)) => step,
    };
    match Box::pin(driver.ending(step)).await {
        Ending::Closed => None,
        Ending::Tunnel {
            client,
            target,
            early,
        } => Some((client, target, early)),
        Ending::Switched {
            client,
            upstream,
            client_in,
            upstream_in,
            flow,
            dispatch,
            totals,
        } => {
            // Boxed: only switched connections pay for the relay's future.
            Box::pin(switched(
                ctx,
                client,
                upstream,
                (client_in, upstream_in),
                flow,
                dispatch,
                totals,
            ))
            .await;
            None
        }
    }
}

/// Relays a connection after a protocol switch (`101`) until it ends; bytes either side
/// sent right after the switch were read with its head (`early`: client's, upstream's).
async fn switched<C: Conn, S: Conn>(
    ctx: &Arc<Shared>,
    mut client: C,
    mut upstream: S,
    early: (Bytes, Bytes),
    flow: OpenFlow,
    dispatch: Dispatch,
    totals: FlowStats,
) {
    let (client_in, upstream_in) = early;
    let wrote = async {
        upstream.write_all(&client_in).await?;
        upstream.flush().await
    };
    let (stats, end) = if !client_in.is_empty() && wrote.await.is_err() {
        (
            FlowStats::default(),
            FlowEnd::Error("the upstream left".into()),
        )
    } else {
        let first = (!upstream_in.is_empty()).then(|| Chunk {
            from: Side::Server,
            data: upstream_in,
        });
        relay(ctx, &dispatch, &mut client, &mut upstream, first, None).await
    };
    flow.end(&dispatch, add(totals, stats), end).await;
}

/// Two totals added up.
fn add(a: FlowStats, b: FlowStats) -> FlowStats {
    FlowStats {
        bytes_from_client: a.bytes_from_client + b.bytes_from_client,
        bytes_from_server: a.bytes_from_server + b.bytes_from_server,
        packets_from_client: a.packets_from_client + b.packets_from_client,
        packets_from_server: a.packets_from_server + b.packets_from_server,
    }
}
