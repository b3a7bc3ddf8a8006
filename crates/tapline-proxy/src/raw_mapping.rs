//! Connections to `tcp`, `psql` and `https` mappings: connect upstream, relay, decode.

use std::net::SocketAddr;
use std::sync::Arc;

use tapline_core::{FlowEnd, FlowStats, Route};
use tapline_decode::FlowDecoder;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::context::Shared;
use crate::flows::OpenFlow;
use crate::mapping::{MappingSpec, Scheme};
use crate::relay::relay;

/// Relays one client connection of a raw mapping until it closes.
pub(crate) async fn serve(
    ctx: Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    spec: Arc<MappingSpec>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = client.set_nodelay(true);
    let protocol = spec.scheme.protocol();
    let (addr, mut server) = match ctx.connect(&spec.host, spec.port).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::warn!("--proxy '{spec}': {}", e.message());
            // The flow is still reported, so outputs show the refused client.
            let addr = ctx
                .resolve(&spec.host, spec.port)
                .await
                .ok()
                .and_then(|addrs| addrs.first().copied())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], spec.port)));
            let (open, dispatch) =
                OpenFlow::start(&ctx, protocol, Route::Mapping, peer, addr).await;
            let end = FlowEnd::Error(e.message().to_string());
            open.end(&dispatch, FlowStats::default(), end).await;
            return;
        }
    };
    let (open, dispatch) = OpenFlow::start(&ctx, protocol, Route::Mapping, peer, addr).await;
    let decoder = match spec.scheme {
        Scheme::Postgres => Some(FlowDecoder::new(protocol, &ctx.decode)),
        Scheme::Tcp => Some(FlowDecoder::for_ports(
            peer.port(),
            addr.port(),
            &ctx.decode,
        )),
        Scheme::Tls | Scheme::Http => None,
    };
    let (stats, end) = relay(&ctx, &dispatch, &mut client, &mut server, None, decoder).await;
    open.end(&dispatch, stats, end).await;
}
