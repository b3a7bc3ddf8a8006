//! `CONNECT host:port` on the forward proxy: connect upstream, answer 200, then serve the
//! tunnel as its own flow. A tunnel whose client opens with a TLS hello is intercepted when
//! the policy says so (see `tls::intercept`); otherwise its bytes are relayed (protocol `tls`,
//! with the name the hello asked for, when the client's first bytes are a TLS hello, else
//! `tcp`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use tapline_core::{Chunk, HttpResponse, Protocol, Route, Side, TlsInfo};
use tapline_tls::hello::looks_like_tls;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use tapline_decode::http1::write::write_response;

use crate::context::Shared;
use crate::errors::short_response;
use crate::flows::OpenFlow;
use crate::relay::{first_chunk, relay};
use crate::tls::handshake::{read_hello, Opening};
use crate::tls::intercept::{self, Destination};

/// Serves `CONNECT target` on `client`: connects upstream, answers 200, then relays the
/// tunnel's bytes as their own flow, or intercepts its TLS. `early` holds bytes the client
/// sent after its request head without waiting for the answer.
pub(crate) async fn tunnel(
    ctx: &Arc<Shared>,
    peer: SocketAddr,
    target: &str,
    mut client: TcpStream,
    early: Bytes,
) {
    let Some((host, port)) = target
        .parse::<Authority>()
        .ok()
        .and_then(|a| Some((a.host().to_string(), a.port_u16()?)))
    else {
        answer(
            &mut client,
            &short_response(400, "tapline: CONNECT needs a host:port target"),
        )
        .await;
        return;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    // The phases an open tunnel is not in are boxed, so an idle tunnel's future stays small.
    let (addr, mut server) = match Box::pin(ctx.connect(&host, port)).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::debug!("CONNECT {host}:{port}: {}", e.message());
            answer(&mut client, &e.response()).await;
            return;
        }
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let first = if early.is_empty() {
        first_chunk(ctx, &mut client, &mut server).await
    } else {
        Ok(Some(Chunk {
            from: Side::Client,
            data: early,
        }))
    };
    let first = match first {
        Ok(Some(c)) if c.from == Side::Client && looks_like_tls(&c.data) => {
            return Box::pin(tls_tunnel(
                ctx,
                peer,
                host,
                port,
                client,
                (addr, server),
                c.data,
            ))
            .await;
        }
        Ok(first) => first,
        Err(end) => {
            let failed = OpenFlow::failed(ctx, Protocol::Tcp, Route::Tunnel, peer, addr, None, end);
            return Box::pin(failed).await;
        }
    };
    let (open, dispatch) = Box::pin(OpenFlow::start(
        ctx,
        Protocol::Tcp,
        Route::Tunnel,
        peer,
        addr,
        None,
    ))
    .await;
    let (stats, end) = relay(ctx, &dispatch, &mut client, &mut server, first, None).await;
    Box::pin(open.end(&dispatch, stats, end)).await;
}

/// A tunnel whose client opened with TLS: intercepted when the policy says so for its
/// target or the name its hello asks for, else relayed untouched (the client sees the
/// origin's own certificate).
async fn tls_tunnel(
    ctx: &Arc<Shared>,
    peer: SocketAddr,
    host: String,
    port: u16,
    mut client: TcpStream,
    (addr, mut server): (SocketAddr, TcpStream),
    first: Bytes,
) {
    let opening = if ctx.tls.interceptor.is_some() {
        read_hello(ctx, &mut client, &first).await
    } else {
        Opening::NotTls(first.to_vec())
    };
    let (raw, sni) = match opening {
        Opening::Hello(reader, hello) => {
            let names = [host.as_str()].into_iter().chain(hello.sni.as_deref());
            if let Some(interceptor) = ctx.tls.intercepting(names, port) {
                let dest = Destination::tunnel(host, port);
                let interceptor = interceptor.clone();
                return intercept::serve(
                    ctx,
                    &interceptor,
                    peer,
                    client,
                    (reader, hello),
                    dest,
                    Ok((addr, server)),
                )
                .await;
            }
            (reader.raw().to_vec(), hello.sni)
        }
        Opening::NotTls(raw) | Opening::Invalid(_, raw) => (raw, sni_of(&first)),
        Opening::Ended(end) => {
            return OpenFlow::failed(ctx, Protocol::Tls, Route::Tunnel, peer, addr, None, end).await
        }
    };
    ctx.tls_counters.relayed();
    let tls = TlsInfo {
        sni,
        ..TlsInfo::default()
    };
    let (open, dispatch) = OpenFlow::start(
        ctx,
        Protocol::Tls,
        Route::Tunnel,
        peer,
        addr,
        Some(Arc::new(tls)),
    )
    .await;
    let first = Chunk {
        from: Side::Client,
        data: Bytes::from(raw),
    };
    let (stats, end) = relay(ctx, &dispatch, &mut client, &mut server, Some(first), None).await;
    open.end(&dispatch, stats, end).await;
}

/// The name a hello in `bytes` asks for, when they hold a whole one.
fn sni_of(bytes: &[u8]) -> Option<String> {
    match tapline_tls::HelloReader::new().feed(bytes) {
        tapline_tls::Hello::Client(hello) => hello.sni,
        _ => None,
    }
}

/// Answers the CONNECT with `resp` and closes.
async fn answer(client: &mut TcpStream, resp: &HttpResponse) {
    let mut out = Vec::new();
    write_response(&mut out, resp, true);
    let _ = client.write_all(&out).await;
}
