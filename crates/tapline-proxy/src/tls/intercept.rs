//! Serving an intercepted TLS connection (a CONNECT tunnel's, or an `https` mapping's): the
//! upstream's handshake first (offering what the client offered, HTTP/2 left out), so the
//! client agrees on what the upstream agreed; then the client's, with a leaf for the names
//! it reached tapline by. HTTP then runs through the same exchange as cleartext (with
//! `https` URLs); anything else through the relay, decrypted. When the upstream's handshake
//! failed, an HTTP client is answered 502 with the reason; either way the flow ends as an
//! error carrying it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tapline_core::{Chunk, FlowEnd, Protocol, Route, Side, TlsInfo};
use tapline_decode::detect::{sniff_client, Sniff};
use tapline_decode::FlowDecoder;
use tapline_tls::rustls::pki_types::ServerName;
use tapline_tls::{leg, server_name, ClientHelloInfo, HelloReader, Interceptor};
use tokio::net::TcpStream;

use super::handshake::{accept, client_protocol, connect, upstream_offer, HTTP1};
use crate::conn::{ClientTls, UpstreamTls};
use crate::context::Shared;
use crate::errors::UpstreamError;
use crate::flows::OpenFlow;
use crate::http::{self, TlsUpstreams, Upstream};
use crate::relay::{first_chunk, relay};

/// Where an intercepted connection goes, and by which names its client knows it.
pub(crate) struct Destination {
    /// The tunnel's target or the mapping's upstream host.
    host: String,
    port: u16,
    route: Route,
    /// Where HTTP requests go.
    upstream: Option<Upstream>,
    /// The upstream is verified for the client's SNI first (tunnels: the client named the
    /// origin), else for `host` first (mappings: the client named tapline).
    sni_first: bool,
    /// Names the leaf carries besides the SNI (the address the client dialled, for
    /// mappings).
    extra_names: Vec<String>,
}

impl Destination {
    /// A CONNECT tunnel to `host:port`.
    pub(crate) fn tunnel(host: String, port: u16) -> Destination {
        Destination {
            upstream: Upstream::tunnel(&host, port),
            host,
            port,
            route: Route::Tunnel,
            sni_first: true,
            extra_names: Vec::new(),
        }
    }

    /// An `https` (`local` is the address the client dialled) or `psql` mapping to
    /// `host:port`.
    pub(crate) fn mapping(host: String, port: u16, local: SocketAddr, http: bool) -> Destination {
        Destination {
            upstream: if http {
                Upstream::fixed(&host, port, true)
            } else {
                None
            },
            host,
            port,
            route: Route::Mapping,
            sni_first: false,
            extra_names: vec![local.ip().to_string()],
        }
    }

    /// The names the client's leaf carries: the SNI first, then the host and the rest.
    pub(crate) fn leaf_names<'a>(&'a self, hello: &'a ClientHelloInfo) -> Vec<&'a str> {
        hello
            .sni
            .as_deref()
            .into_iter()
            .chain(std::iter::once(self.host.as_str()))
            .chain(self.extra_names.iter().map(String::as_str))
            .collect()
    }

    /// The name the upstream is verified for.
    pub(crate) fn upstream_name(&self, hello: &ClientHelloInfo) -> Option<ServerName<'static>> {
        if self.sni_first {
            server_name(hello.sni.as_deref(), &self.host)
        } else {
            // A mapping to an address still verifies by name when the client sent one.
            let host_is_name =
                self.host.parse::<std::net::IpAddr>().is_err() && !self.host.starts_with('[');
            let sni = if host_is_name {
                None
            } else {
                hello.sni.as_deref()
            };
            server_name(sni, &self.host)
        }
    }
}

/// The upstream leg of an intercepted connection once tried: its address (when reached)
/// and its TLS, or why there is none.
type UpstreamLeg = (Option<SocketAddr>, Result<UpstreamTls, UpstreamError>);

/// Serves a client that opened with `hello` on an intercepted connection to `dest`, whose
/// upstream TCP connection is `server` (or why there is none).
pub(crate) async fn serve(
    ctx: &Arc<Shared>,
    interceptor: &Arc<Interceptor>,
    peer: SocketAddr,
    client: TcpStream,
    (reader, hello): (Box<HelloReader>, ClientHelloInfo),
    dest: Destination,
    server: Result<(SocketAddr, TcpStream), UpstreamError>,
) {
    let offer = upstream_offer(&hello.alpn);
    let name = dest.upstream_name(&hello);
    let (addr, upstream): UpstreamLeg = match (server, name.clone()) {
        (Err(e), _) => (None, Err(e)),
        (Ok((addr, _)), None) => (
            Some(addr),
            Err(UpstreamError::Handshake(format!(
                "{} is no name to verify the upstream for",
                dest.host
            ))),
        ),
        (Ok((addr, tcp)), Some(name)) => {
            let tls = connect(ctx, interceptor, tcp, name, offer.clone()).await;
            if tls.is_err() {
                ctx.tls_counters.upstream_failed();
            }
            (Some(addr), tls.map_err(UpstreamError::Handshake))
        }
    };
    let agreed = upstream
        .as_ref()
        .ok()
        .map(|s| s.get_ref().1.alpn_protocol());
    let alpn = client_protocol(&hello, agreed);
    let names = dest.leaf_names(&hello);
    let shown_addr = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], dest.port)));
    let client = match accept(ctx, interceptor, reader, client, &names, alpn.as_deref()).await {
        Ok(client) => client,
        Err(why) => {
            tracing::debug!("{peer}: {why}");
            ctx.tls_counters.client_failed();
            let tls = TlsInfo {
                sni: hello.sni.clone(),
                ..TlsInfo::default()
            };
            let tls = Some(Arc::new(tls));
            let end = FlowEnd::Error(why);
            return OpenFlow::failed(ctx, Protocol::Tls, dest.route, peer, shown_addr, tls, end)
                .await;
        }
    };
    ctx.tls_counters.intercepted();
    let tls = Arc::new(TlsInfo {
        sni: hello.sni.clone(),
        client: Some(leg(client.get_ref().1)),
        server: upstream.as_ref().ok().map(|s| leg(s.get_ref().1)),
    });
    let leg = Legs {
        ctx,
        peer,
        addr: shown_addr,
        dest: &dest,
        tls,
    };
    match (alpn.as_deref(), upstream) {
        // Without the upstream, a client that did not say what it speaks is taken for an
        // HTTP one: it gets the 502 that says why.
        (Some(HTTP1), upstream) | (None, upstream @ Err(_)) => {
            let upstreams = TlsUpstreams::new(
                ctx.clone(),
                interceptor.clone(),
                fallback_name(name, &dest.host),
                vec![HTTP1.to_vec()],
                addr,
                upstream,
            );
            leg.http(client, upstreams, Bytes::new()).await
        }
        (Some(_), Ok(upstream)) => leg.relay(client, upstream, None).await,
        (None, Ok(mut upstream)) => {
            let mut client = client;
            match first_chunk(ctx, &mut client, &mut upstream).await {
                Ok(Some(c)) if c.from == Side::Client && is_http(&c.data) => {
                    let upstreams = TlsUpstreams::new(
                        ctx.clone(),
                        interceptor.clone(),
                        fallback_name(name, &dest.host),
                        offer,
                        addr,
                        Ok(upstream),
                    );
                    leg.http(client, upstreams, c.data).await
                }
                Ok(first) => leg.relay(client, upstream, first).await,
                Err(end) => leg.end(end).await,
            }
        }
        (Some(_), Err(e)) => leg.end(FlowEnd::Error(e.message().to_string())).await,
    }
}

/// An intercepted connection, both handshakes done, ready to carry traffic.
struct Legs<'a> {
    ctx: &'a Arc<Shared>,
    peer: SocketAddr,
    addr: SocketAddr,
    dest: &'a Destination,
    tls: Arc<TlsInfo>,
}

impl Legs<'_> {
    /// HTTP exchanges (their flows open with the first request).
    async fn http(self, client: ClientTls, upstreams: TlsUpstreams, early: Bytes) {
        let Some(upstream) = self.dest.upstream.clone() else {
            let why = format!("{} is no valid Host", self.dest.host);
            return self.end(FlowEnd::Error(why)).await;
        };
        http::exchanges(
            self.ctx,
            Arc::new(upstreams),
            client,
            self.peer,
            upstream,
            Some(self.tls),
            early,
        )
        .await;
    }

    /// Anything but HTTP: relayed decrypted, its protocol sniffed for decoding.
    async fn relay(self, mut client: ClientTls, mut upstream: UpstreamTls, first: Option<Chunk>) {
        let (open, dispatch) = OpenFlow::start(
            self.ctx,
            Protocol::Tcp,
            self.dest.route,
            self.peer,
            self.addr,
            Some(self.tls),
        )
        .await;
        let decoder = FlowDecoder::for_ports(self.peer.port(), self.addr.port(), &self.ctx.decode);
        let (stats, end) = relay(
            self.ctx,
            &dispatch,
            &mut client,
            &mut upstream,
            first,
            Some(decoder),
        )
        .await;
        open.end(&dispatch, stats, end).await;
    }

    /// A flow that carried nothing: opened and ended with `end`.
    async fn end(self, end: FlowEnd) {
        let (ctx, route, tls) = (self.ctx, self.dest.route, Some(self.tls));
        OpenFlow::failed(ctx, Protocol::Tls, route, self.peer, self.addr, tls, end).await;
    }
}

/// True when a client's first decrypted bytes open an HTTP request.
fn is_http(data: &[u8]) -> bool {
    sniff_client(data) == Sniff::Is(Protocol::Http)
}

/// The name later upstream connections are verified for: the handshake's, or the host's.
fn fallback_name(name: Option<ServerName<'static>>, host: &str) -> ServerName<'static> {
    name.or_else(|| server_name(None, host))
        .unwrap_or_else(|| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()))
}
