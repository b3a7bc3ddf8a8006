//! HTTP/1 serving for the forward proxy (absolute-form requests, `CONNECT`) and `http`
//! mappings (reverse proxy to one upstream). Every request goes through the request hooks,
//! an upstream connection (pooled), then the response hooks; bodies stream in their own
//! framing unless a hook reads them.
//!
//! Layers, outside in: [`serve`] takes a TCP client connection and ends it (tunnel, relay
//! after a protocol switch, or close); the `driver` is its one I/O loop, generic over the
//! client's and the upstream's byte streams; the `exchange` machine decides everything about
//! HTTP/1 without doing I/O (with `exchange::apply` writing heads after the hooks); `target`
//! says where a request goes and `upstream` gets connections to it. The proxy speaks HTTP/1
//! itself rather than through hyper: one task per client connection, heads parsed in place,
//! no header maps (ARCHITECTURE.md says why).

mod driver;
mod exchange;
mod io;
pub(crate) mod pool;
mod target;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tapline_core::{Chunk, FlowEnd, FlowStats, Side};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) use target::Upstream;
pub(crate) use upstream::Remembered;

use crate::context::Shared;
use crate::relay::relay;
use crate::stop::Phase;
use driver::{Driver, Ending};

/// Serves one client connection until it closes or the run stops.
pub(crate) async fn serve(
    ctx: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    upstream: Upstream,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut driver = Driver::new(ctx.clone(), ctx.clone(), stream, peer, upstream);
    let stop = ctx.stop.clone();
    let outcome = tokio::select! {
        step = driver.run() => Some(step),
        _ = stop.reached(Phase::Forced) => None,
    };
    let step = match outcome {
        None => return driver.forced().await,
        Some(None) => return,
        Some(Some(step)) => step,
    };
    match driver.ending(step).await {
        Ending::Closed => {}
        Ending::Tunnel {
            client,
            target,
            early,
        } => crate::connect::tunnel(&ctx, peer, &target, client, early).await,
        Ending::Switched {
            mut client,
            mut upstream,
            client_in,
            upstream_in,
            flow,
            dispatch,
            totals,
        } => {
            // Bytes either side sent right after the switch were read with its head.
            let (stats, end) =
                if !client_in.is_empty() && upstream.write_all(&client_in).await.is_err() {
                    (
                        FlowStats::default(),
                        FlowEnd::Error("the upstream left".into()),
                    )
                } else {
                    let first = (!upstream_in.is_empty()).then(|| Chunk {
                        from: Side::Server,
                        data: upstream_in,
                    });
                    relay(&ctx, &dispatch, &mut client, &mut upstream, first, None).await
                };
            flow.end(&dispatch, add(totals, stats), end).await;
        }
    }
    drop(permit);
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
