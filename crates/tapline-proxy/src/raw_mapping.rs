//! Connections to `tcp`, `psql` and `https` mappings: connect upstream, relay, decode. An
//! `https` mapping's TLS is intercepted when the policy says so; `psql` mappings negotiate
//! SSL in `postgres`.

use std::net::SocketAddr;
use std::sync::Arc;

use tapline_core::{Chunk, FlowEnd, Protocol, Route, Side};
use tapline_decode::FlowDecoder;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::context::Shared;
use crate::flows::OpenFlow;
use crate::mapping::{MappingSpec, Scheme};
use crate::relay::relay;
use crate::tls::handshake::{read_hello, Opening};
use crate::tls::intercept::{self, Destination};

/// Serves one client connection of a raw mapping until it closes.
pub(crate) async fn serve(
    ctx: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
    spec: Arc<MappingSpec>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = client.set_nodelay(true);
    let may_intercept = ctx.tls.interceptor.is_some()
        && ctx
            .tls
            .policy
            .may_intercept([spec.host.as_str()], spec.port);
    match spec.scheme {
        Scheme::Postgres => Box::pin(crate::postgres::serve(&ctx, client, peer, &spec)).await,
        Scheme::Tls if may_intercept => Box::pin(tls_mapping(&ctx, client, peer, &spec)).await,
        _ => Box::pin(relay_mapping(&ctx, client, peer, &spec, None)).await,
    }
}

/// Relays a mapping's connection to its upstream as it comes (after `first`, bytes the
/// client sent already), decoding what the scheme or the bytes say.
pub(crate) async fn relay_mapping(
    ctx: &Shared,
    mut client: TcpStream,
    peer: SocketAddr,
    spec: &MappingSpec,
    first: Option<Chunk>,
) {
    let protocol = spec.scheme.protocol();
    let Some((addr, mut server)) = Box::pin(connect_upstream(ctx, peer, spec, protocol)).await
    else {
        return;
    };
    let (open, dispatch) = Box::pin(OpenFlow::start(
        ctx,
        protocol,
        Route::Mapping,
        peer,
        addr,
        None,
    ))
    .await;
    let decoder = match spec.scheme {
        Scheme::Postgres => Some(FlowDecoder::new(protocol, &ctx.decode)),
        Scheme::Tcp => Some(FlowDecoder::for_ports(
            peer.port(),
            addr.port(),
            &ctx.decode,
        )),
        Scheme::Tls | Scheme::Http => None,
    };
    let (stats, end) = relay(ctx, &dispatch, &mut client, &mut server, first, decoder).await;
    Box::pin(open.end(&dispatch, stats, end)).await;
}

/// Connects to the mapping's upstream; when it cannot, the flow is still reported (so
/// outputs show the refused client) and `None` returned.
pub(crate) async fn connect_upstream(
    ctx: &Shared,
    peer: SocketAddr,
    spec: &MappingSpec,
    protocol: Protocol,
) -> Option<(SocketAddr, TcpStream)> {
    match ctx.connect(&spec.host, spec.port).await {
        Ok(connected) => Some(connected),
        Err(e) => {
            tracing::warn!("--proxy '{spec}': {}", e.message());
            let addr = upstream_addr(ctx, spec).await;
            let end = FlowEnd::Error(e.message().to_string());
            OpenFlow::failed(ctx, protocol, Route::Mapping, peer, addr, None, end).await;
            None
        }
    }
}

/// The mapping upstream's address as flows show it (without connecting).
pub(crate) async fn upstream_addr(ctx: &Shared, spec: &MappingSpec) -> SocketAddr {
    ctx.resolve(&spec.host, spec.port)
        .await
        .ok()
        .and_then(|addrs| addrs.first().copied())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], spec.port)))
}

/// An `https` mapping that may be intercepted: its client's hello decides (an ignored name
/// is relayed untouched); a client that does not open with TLS is a flow error.
async fn tls_mapping(
    ctx: &Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    spec: &MappingSpec,
) {
    let opening = read_hello(ctx, &mut client, &[]).await;
    let (end, tls_error) = match opening {
        Opening::Hello(reader, hello) => {
            let names = [spec.host.as_str()].into_iter().chain(hello.sni.as_deref());
            let Some(interceptor) = ctx.tls.intercepting(names, spec.port).cloned() else {
                ctx.tls_counters.relayed();
                let first = Chunk {
                    from: Side::Client,
                    data: reader.raw().to_vec().into(),
                };
                return relay_mapping(ctx, client, peer, spec, Some(first)).await;
            };
            let server = ctx.connect(&spec.host, spec.port).await;
            let local = client.local_addr().unwrap_or(spec.listen);
            let dest = Destination::mapping(spec.host.clone(), spec.port, local, true);
            return intercept::serve(
                ctx,
                &interceptor,
                peer,
                client,
                (reader, hello),
                dest,
                server,
            )
            .await;
        }
        Opening::NotTls(_) => (
            FlowEnd::Error("the client did not open with a TLS hello".into()),
            true,
        ),
        Opening::Invalid(why, _) => (FlowEnd::Error(format!("bad TLS hello: {why}")), true),
        Opening::Ended(end) => (end, false),
    };
    if tls_error {
        ctx.tls_counters.client_failed();
    }
    let addr = upstream_addr(ctx, spec).await;
    OpenFlow::failed(ctx, Protocol::Tls, Route::Mapping, peer, addr, None, end).await;
}
