//! `CONNECT host:port` on the forward proxy: connect upstream, answer 200, then relay the
//! tunnel's bytes as their own flow (protocol `tls` when the client's first byte opens a TLS
//! handshake record, else `tcp`).

use std::net::SocketAddr;

use bytes::Bytes;
use http::uri::Authority;
use tapline_core::{Chunk, FlowEnd, FlowStats, HttpResponse, Protocol, Route, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tapline_decode::http1::write::write_response;

use crate::context::Shared;
use crate::errors::short_response;
use crate::flows::OpenFlow;
use crate::relay::{end_of, relay};
use crate::stop::Phase;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Bytes read to learn who speaks first.
const FIRST_READ: usize = 16 * 1024;

/// Serves `CONNECT target` on `client`: connects upstream, answers 200, then relays the
/// tunnel's bytes as their own flow. `early` holds bytes the client sent after its request
/// head without waiting for the answer.
pub(crate) async fn tunnel(
    ctx: &Shared,
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
    let (addr, mut server) = match ctx.connect(&host, port).await {
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
    let protocol = match &first {
        Ok(Some(c)) if c.from == Side::Client && c.data.first() == Some(&TLS_HANDSHAKE) => {
            Protocol::Tls
        }
        _ => Protocol::Tcp,
    };
    let (open, dispatch) = OpenFlow::start(ctx, protocol, Route::Tunnel, peer, addr).await;
    let (stats, end) = match first {
        Ok(first) => relay(ctx, &dispatch, &mut client, &mut server, first, None).await,
        Err(end) => (FlowStats::default(), end),
    };
    open.end(&dispatch, stats, end).await;
}

/// Answers the CONNECT with `resp` and closes.
async fn answer(client: &mut TcpStream, resp: &HttpResponse) {
    let mut out = Vec::new();
    write_response(&mut out, resp, true);
    let _ = client.write_all(&out).await;
}

/// Waits for whichever side speaks first. `Ok(None)` when a side closed without a byte.
async fn first_chunk(
    ctx: &Shared,
    client: &mut TcpStream,
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
