//! One captured HTTP connection replayed: its requests in order over one connection to the
//! target (kept alive while the server allows, reopened when it closes), each written as
//! captured (method, target, header fields in order and case, body) with its framing made
//! from the body that is sent, and the `Host` swapped for `--host` when given. Through
//! `--via` the requests go to a forward proxy in absolute form.

use tapline_core::{FlowEnd, HttpRequest, Protocol, Transaction};
use tapline_decode::http1::write::{write_field, write_length, write_request_line};
use tokio::sync::mpsc;

use crate::conn::{self, Conn};
use crate::engine::Context;
use crate::feed::{ConnId, HttpOutcome};
use crate::report::Exchange;
use crate::target::{Proto, Target};
use crate::unit::Unit;

/// Replays `first` and the units after it on one replay connection at a time.
pub(crate) async fn replay(
    conn: ConnId,
    first: Unit,
    mut rx: mpsc::Receiver<Unit>,
    ctx: &Context,
) -> anyhow::Result<()> {
    let Some(target) = &ctx.targets.http else {
        return Ok(());
    };
    let mut open: Option<Conn> = None;
    let mut unit = first;
    loop {
        if let Unit::Http {
            ts,
            request,
            captured,
        } = unit
        {
            ctx.clock.wait(ts).await;
            let bytes = encode(&request, target, ctx);
            let reused = open.is_some();
            let mut result = send(&mut open, &bytes, target, ctx).await?;
            if result.is_err() && reused {
                // A kept-alive connection the server had closed: once more on a fresh one.
                result = send(&mut open, &bytes, target, ctx).await?;
            }
            let latency = (
                captured.and_then(|c| c.latency),
                result.as_ref().ok().and_then(|o| o.latency),
            );
            let exchange = Exchange::compare(
                conn,
                "http",
                format!("{} {}", request.method, request.path),
                captured.as_ref().map(Into::into),
                result.as_ref().map(Into::into).map_err(Clone::clone),
            );
            ctx.report.lock().add(exchange, latency);
        }
        match rx.recv().await {
            Some(next) => unit = next,
            None => break,
        }
    }
    if let Some(c) = open {
        c.close(FlowEnd::Fin).await;
    }
    Ok(())
}

/// Sends one request on the open connection (opening one first if none is), and reads its
/// answer. The outer error is a connection that cannot be opened (the run's end); the inner
/// one an exchange that failed, after which no connection is open.
async fn send(
    open: &mut Option<Conn>,
    bytes: &[u8],
    target: &Target,
    ctx: &Context,
) -> anyhow::Result<Result<HttpOutcome, String>> {
    let c = match open {
        Some(c) => c,
        None => open.insert(connect(target, ctx).await?),
    };
    match exchange(c, bytes).await {
        Ok((outcome, keep_alive)) => {
            if !keep_alive {
                if let Some(c) = open.take() {
                    c.close(FlowEnd::Fin).await;
                }
            }
            Ok(Ok(outcome))
        }
        Err(e) => {
            if let Some(c) = open.take() {
                c.close(FlowEnd::Error(e.clone())).await;
            }
            Ok(Err(e))
        }
    }
}

/// Writes the request and reads until its response is complete: the outcome and whether
/// the connection stays open.
async fn exchange(c: &mut Conn, bytes: &[u8]) -> Result<(HttpOutcome, bool), String> {
    c.send(bytes).await.map_err(|e| format!("sending: {e}"))?;
    loop {
        let n = c.recv().await.map_err(|e| format!("reading: {e}"))?.len();
        for tx in c.take_transactions() {
            if let Transaction::Http {
                request,
                response,
                latency,
            } = tx
            {
                let keep_alive = n > 0
                    && !response.headers.has_token("connection", "close")
                    && !request.headers.has_token("connection", "close")
                    && (response.version != "HTTP/1.0"
                        || response.headers.has_token("connection", "keep-alive"));
                let outcome = HttpOutcome {
                    status: response.status,
                    body_len: response.body_len,
                    latency: Some(latency),
                };
                return Ok((outcome, keep_alive));
            }
        }
        if n == 0 {
            return Err("the server closed the connection without an answer".into());
        }
    }
}

/// Opens a replay connection to the target (or `--via` proxy), TLS for `https=`.
async fn connect(target: &Target, ctx: &Context) -> anyhow::Result<Conn> {
    let (host, port) = match &ctx.targets.via {
        Some((h, p)) => (h.as_str(), *p),
        None => (target.host.as_str(), target.port),
    };
    let tcp = conn::connect(host, port, ctx.wiring.timeout).await?;
    let addrs = (tcp.local_addr()?, tcp.peer_addr()?);
    let (io, tls): (Box<dyn conn::Io>, _) = match (target.proto, &ctx.targets.tls) {
        (Proto::Https, Some(config)) => {
            let name = ctx.targets.host.as_deref().unwrap_or(&target.host);
            let (io, info) = conn::tls(tcp, config, name).await?;
            (io, Some(info))
        }
        _ => (Box::new(tcp), None),
    };
    Ok(Conn::open(io, addrs, Protocol::Http, tls, &ctx.wiring).await)
}

/// The request's bytes as they go out.
fn encode(request: &HttpRequest, target: &Target, ctx: &Context) -> Vec<u8> {
    let host = ctx
        .targets
        .host
        .clone()
        .or_else(|| request.headers.get("host").map(String::from))
        .unwrap_or_else(|| format!("{}:{}", target.host, target.port));
    // Through a proxy the absolute form names the target (the proxy routes by it and, as
    // RFC 9112 says, takes the Host from it); the Host field is still the captured one.
    let form = match &ctx.targets.via {
        Some(_) => format!("http://{}:{}{}", target.host, target.port, request.path),
        None => request.path.clone(),
    };
    let mut out = Vec::with_capacity(256 + request.body.len());
    let version = match request.version.as_str() {
        "" => "HTTP/1.1",
        v => v,
    };
    write_request_line(
        &mut out,
        request.method.as_bytes(),
        form.as_bytes(),
        version.as_bytes(),
    );
    let mut framed = false;
    let mut host_sent = false;
    for (name, value) in request.headers.iter() {
        if name.eq_ignore_ascii_case("host") {
            if !host_sent {
                write_field(&mut out, name.as_bytes(), host.as_bytes());
                host_sent = true;
            }
        } else if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            framed = true;
        } else {
            write_field(&mut out, name.as_bytes(), value.as_bytes());
        }
    }
    if !host_sent {
        write_field(&mut out, b"Host", host.as_bytes());
    }
    if framed || !request.body.is_empty() {
        write_length(&mut out, request.body.len() as u64);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&request.body);
    out
}
