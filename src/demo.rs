//! `tapline demo`: a small HTTP origin to try the proxy against.
//!
//! `/` a greeting, `/echo` the request back as JSON, `/status/{code}`, `/bytes/{n}` n bytes
//! (a repeating pattern), `/slow?ms=N` answers after N ms, `/chunked/{n}` n bytes in chunks.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::cli::DemoArgs;
use crate::shutdown::Shutdown;

type DemoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves until a signal or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.address)
        .await
        .with_context(|| format!("cannot listen on {} (demo --address)", args.address))?;
    let addr = listener.local_addr()?;
    eprintln!("tapline demo: serving http://{addr}/ (/, /echo, /status/CODE, /bytes/N, /slow?ms=N, /chunked/N)");
    let mut shutdown = Shutdown::install(args.duration);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { tracing::warn!("demo accept: {e}"); continue; }
            },
            _ = shutdown.wait() => return Ok(()),
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<DemoBody>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let response = match segments.as_slice() {
        [""] => text(StatusCode::OK, "Hello from the tapline demo origin.\n"),
        ["echo"] => echo(req).await,
        ["status", code] => match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => text(status, &format!("{status}\n")),
            None => text(StatusCode::BAD_REQUEST, "status must be a number 100-999\n"),
        },
        ["bytes", n] => match n.parse::<usize>() {
            Ok(n) if n <= 64 << 20 => bytes_response(n),
            _ => text(StatusCode::BAD_REQUEST, "n must be at most 67108864\n"),
        },
        ["chunked", n] => match n.parse::<usize>() {
            Ok(n) if n <= 64 << 20 => chunked_response(n),
            _ => text(StatusCode::BAD_REQUEST, "n must be at most 67108864\n"),
        },
        ["slow"] => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1000)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, &format!("slept {ms} ms\n"))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: &str) -> Response<DemoBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())).boxed())
        .expect("static response parts are valid")
}

async fn echo(req: Request<Incoming>) -> Response<DemoBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}\n")),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string() + "\n")).boxed())
        .expect("static response parts are valid")
}

/// `n` bytes of a repeating `0123456789abcdef…` pattern, so clients can check them.
fn pattern(n: usize) -> Bytes {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz\n";
    Bytes::from_iter((0..n).map(|i| ALPHABET[i % ALPHABET.len()]))
}

fn bytes_response(n: usize) -> Response<DemoBody> {
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Full::new(pattern(n)).boxed())
        .expect("static response parts are valid")
}

fn chunked_response(n: usize) -> Response<DemoBody> {
    let data = pattern(n);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..n)
        .step_by(16 * 1024)
        .map(|start| Ok(Frame::data(data.slice(start..(start + 16 * 1024).min(n)))))
        .collect();
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            chunks,
        ))))
        .expect("static response parts are valid")
}
