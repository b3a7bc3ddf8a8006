//! The view's HTTP server, on a thread of its own (so a slow browser never holds up
//! traffic): the page, the rows so far, the live stream (server-sent events), the stats,
//! and downloads of what the filter shows as JSON lines or HAR. With a token, every request
//! must carry it (`Authorization: Bearer …` or `?token=…`, which the page and its
//! `EventSource` use).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Semaphore};

use crate::filter::{query_pairs, Filter};
use crate::history::History;
use crate::row::Row;
use crate::stall::StallGuard;

/// The page, its script and style in one file, built into the binary.
const PAGE: &str = include_str!("../assets/index.html");
/// Browsers (tabs) served at once; more wait for a free slot.
const MAX_CONNECTIONS: usize = 64;
/// A comment line on idle streams, so proxies and browsers keep them open.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A browser that stops reading for this long is disconnected.
const STALL_LIMIT: Duration = Duration::from_secs(20);
/// How often an idle stream looks whether the source ended.
const POLL: Duration = Duration::from_millis(250);

type Body = BoxBody<Bytes, Infallible>;

/// What the server reads: the history, the run's stats, the token.
pub struct Shared {
    /// Rows and the live broadcast.
    pub history: Arc<History>,
    /// The run's counters as JSON (stages, plugins), read for every stats request.
    pub stats: Box<dyn Fn() -> Value + Send + Sync>,
    /// Required on every request when set.
    pub token: Option<String>,
}

/// A running view server.
#[derive(Debug)]
pub struct WebServer {
    local_addr: SocketAddr,
}

impl WebServer {
    /// Binds `addr` now (so a busy address is an error at start) and serves on a thread of
    /// its own until the process ends.
    pub fn start(addr: SocketAddr, shared: Shared) -> std::io::Result<WebServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tapline-web".into())
            .spawn(move || runtime.block_on(serve(listener, Arc::new(shared))))?;
        Ok(WebServer { local_addr })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("web view accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(StallGuard::new(stream, STALL_LIMIT)), service)
                .await;
            drop(permit);
        });
    }
}

fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if !authorized(shared, &req) {
        return text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token (--web-token)\n",
        );
    }
    let query = req.uri().query().unwrap_or("");
    let history = &shared.history;
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/") => {
            let mut r = Response::new(full(PAGE));
            set(&mut r, "text/html; charset=utf-8");
            r
        }
        ("GET", "/api/rows") => {
            let after = number(query, "after");
            let rows = history.since(after);
            json_response(&format!(
                "{{\"ended\":{},\"total\":{},\"rows\":[{}]}}",
                history.source_ended(),
                history.total(),
                rows.iter()
                    .map(|r| r.json.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        }
        ("GET", "/api/stream") => {
            let after = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| number(query, "after"));
            stream(history.clone(), after)
        }
        ("GET", "/api/stats") => {
            let mut stats = (shared.stats)();
            stats["rows_total"] = json!(history.total());
            stats["ended"] = json!(history.source_ended());
            json_response(&stats.to_string())
        }
        ("GET", path @ ("/api/download.jsonl" | "/api/download.har")) => {
            let filter = match Filter::from_query(query) {
                Ok(f) => f,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("filter: {e}\n")),
            };
            let rows: Vec<Arc<Row>> = history
                .since(0)
                .into_iter()
                .filter(|r| filter.keeps(&r.facts))
                .collect();
            if path.ends_with(".har") {
                let values: Vec<Value> = rows
                    .iter()
                    .filter_map(|r| serde_json::from_str(&r.json).ok())
                    .collect();
                let mut r = json_response(&tapline_output::har::log(&values).to_string());
                attachment(&mut r, "tapline.har");
                r
            } else {
                let mut body = String::new();
                for row in &rows {
                    body.push_str(&row.json);
                    body.push('\n');
                }
                let mut r = Response::new(full(body));
                set(&mut r, "application/x-ndjson");
                attachment(&mut r, "tapline.jsonl");
                r
            }
        }
        ("GET", _) => text(StatusCode::NOT_FOUND, "not found\n"),
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"),
    }
}

/// The token check: none configured, or the request carries it.
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req.uri().query().unwrap_or("");
    let given = bearer.map(String::from).or_else(|| {
        query_pairs(query)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    });
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The live stream: rows after `after` from the history, then each new row as it comes,
/// `ended` once the source ended, and a heartbeat. A stream that falls too far behind is
/// ended; the browser reconnects with the last id it saw.
fn stream(history: Arc<History>, after: u64) -> Response<Body> {
    struct State {
        history: Arc<History>,
        live: broadcast::Receiver<Arc<Row>>,
        backlog: std::vec::IntoIter<Arc<Row>>,
        last: u64,
        told_ended: bool,
    }
    let live = history.subscribe();
    let backlog = history.since(after).into_iter();
    let state = State {
        history,
        live,
        backlog,
        last: after,
        told_ended: false,
    };
    let events = futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        if let Some(row) = st.backlog.next() {
            st.last = row.id;
            return Some((event(&row), Some(st)));
        }
        let mut idle = Duration::ZERO;
        loop {
            if !st.told_ended && st.history.source_ended() {
                st.told_ended = true;
                return Some((Bytes::from_static(b"event: ended\ndata: {}\n\n"), Some(st)));
            }
            match tokio::time::timeout(POLL, st.live.recv()).await {
                Ok(Ok(row)) if row.id <= st.last => continue,
                Ok(Ok(row)) => {
                    st.last = row.id;
                    return Some((event(&row), Some(st)));
                }
                // Fell behind the broadcast: end; the page resumes from its last id.
                Ok(Err(_)) => return None,
                Err(_) => {
                    idle += POLL;
                    if idle >= HEARTBEAT {
                        return Some((Bytes::from_static(b": idle\n\n"), Some(st)));
                    }
                }
            }
        }
    });
    let prelude = futures_util::stream::once(async { Bytes::from_static(b"retry: 1000\n\n") });
    let body = StreamBody::new(
        prelude
            .chain(events)
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    let mut r = Response::new(BodyExt::boxed(body));
    set(&mut r, "text/event-stream");
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn event(row: &Row) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: row\ndata: {}\n\n",
        row.id, row.json
    ))
}

fn number(query: &str, key: &str) -> u64 {
    query_pairs(query)
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn set(r: &mut Response<Body>, content_type: &'static str) {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
}

fn attachment(r: &mut Response<Body>, name: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
}

fn json_response(body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    set(&mut r, "application/json");
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    set(&mut r, "text/plain; charset=utf-8");
    r
}
