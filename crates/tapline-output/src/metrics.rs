//! Run counters and their Prometheus text exposition.
//!
//! [`Metrics`] is an [`EventSink`] that counts flows (started and ended, by mode and protocol),
//! bytes each way (from flow totals) and events by kind; it also holds counters registered by
//! other parts of the run (syslog sends and drops, capture drops). [`render`] writes all of
//! them plus the pipeline's per-stage counters and call duration histogram in the Prometheus
//! text format (version 0.0.4), and [`MetricsServer`] answers `GET /metrics` with it.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tapline_core::{
    Event, EventKind, EventSink, Headers, HttpResponse, Kind, Mode, Pipeline, Protocol,
    StageCounters, LATENCY_BUCKETS_MICROS,
};
use tapline_decode::http1::write::write_response;
use tapline_decode::http1::{RequestHead, Strictness};

const MODES: [Mode; 3] = [Mode::Proxy, Mode::Capture, Mode::Replay];
const PROTOCOLS: [Protocol; 5] = [
    Protocol::Http,
    Protocol::Tls,
    Protocol::Postgres,
    Protocol::Tcp,
    Protocol::Udp,
];

/// Counters per (mode, protocol).
type ByFlowKind = [[AtomicU64; PROTOCOLS.len()]; MODES.len()];

/// What went wrong with `--metrics`.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is neither a port nor `HOST:PORT`.
    #[error("--metrics '{0}' is not a port or HOST:PORT")]
    BadAddress(String),
    /// The listener could not be opened.
    #[error("cannot serve metrics on {0}: {1}")]
    Bind(SocketAddr, io::Error),
}

/// The run's counters.
#[derive(Default)]
pub struct Metrics {
    flows_started: ByFlowKind,
    flows_ended: ByFlowKind,
    bytes_from_client: ByFlowKind,
    bytes_from_server: ByFlowKind,
    events: [AtomicU64; Kind::COUNT],
    external: Mutex<Vec<External>>,
}

/// A counter owned elsewhere, read when rendering.
struct External {
    name: String,
    help: String,
    labels: String,
    label_values: Vec<String>,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a counter owned elsewhere: `name` (a Prometheus metric name ending in
    /// `_total`), its help text (also the end-of-run stats label), labels, and how to read it.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let mut text = String::new();
        label_set(&mut text, labels);
        self.external.lock().push(External {
            name: name.to_string(),
            help: help.to_string(),
            labels: text,
            label_values: labels.iter().map(|(_, v)| v.to_string()).collect(),
            read: Box::new(read),
        });
    }

    /// A new counter registered under `name`, for the caller to bump.
    pub fn counter(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(0));
        let read = counter.clone();
        self.register(name, help, &[], move || read.load(Ordering::Relaxed));
        counter
    }

    /// Events seen, by kind, in [`Kind::ALL`] order.
    pub fn event_counts(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL
            .into_iter()
            .zip(&self.events)
            .map(|(k, n)| (k, n.load(Ordering::Relaxed)))
    }

    /// The registered counters as `help (label values)` and value, for the end-of-run stats.
    pub fn external_counts(&self) -> Vec<(String, u64)> {
        self.external
            .lock()
            .iter()
            .map(|e| {
                let mut what = e.help.trim_end_matches('.').to_string();
                if !e.label_values.is_empty() {
                    let _ = write!(what, " ({})", e.label_values.join(", "));
                }
                (what, (e.read)())
            })
            .collect()
    }
}

fn slot(counters: &ByFlowKind, mode: Mode, protocol: Protocol) -> &AtomicU64 {
    let m = MODES.iter().position(|&x| x == mode).unwrap_or(0);
    let p = PROTOCOLS.iter().position(|&x| x == protocol).unwrap_or(0);
    &counters[m][p]
}

impl EventSink for Metrics {
    fn emit(&self, event: &Event) {
        self.events[event.kind().index()].fetch_add(1, Ordering::Relaxed);
        let Some(flow) = &event.flow else {
            return;
        };
        match &event.kind {
            EventKind::FlowStart => {
                slot(&self.flows_started, flow.mode, flow.protocol).fetch_add(1, Ordering::Relaxed);
            }
            EventKind::FlowEnd { stats, .. } => {
                let (m, p) = (flow.mode, flow.protocol);
                slot(&self.flows_ended, m, p).fetch_add(1, Ordering::Relaxed);
                slot(&self.bytes_from_client, m, p)
                    .fetch_add(stats.bytes_from_client, Ordering::Relaxed);
                slot(&self.bytes_from_server, m, p)
                    .fetch_add(stats.bytes_from_server, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Metrics only count events (and read flow totals, which are always built).
    fn wants_details(&self, _kind: Kind) -> bool {
        false
    }
}

/// The Prometheus text exposition of `metrics` and the stages of `pipeline`.
pub fn render(metrics: &Metrics, pipeline: &Pipeline) -> String {
    let mut out = String::with_capacity(8192);
    by_flow_kind(
        &mut out,
        "tapline_flows_started_total",
        "Flows opened, by mode and protocol.",
        &metrics.flows_started,
        None,
    );
    by_flow_kind(
        &mut out,
        "tapline_flows_ended_total",
        "Flows closed, by mode and protocol.",
        &metrics.flows_ended,
        None,
    );
    header(
        &mut out,
        "tapline_flow_bytes_total",
        "Payload bytes of ended flows, by mode, protocol and direction.",
        "counter",
    );
    for (direction, counters) in [
        ("from_client", &metrics.bytes_from_client),
        ("from_server", &metrics.bytes_from_server),
    ] {
        by_flow_kind(
            &mut out,
            "tapline_flow_bytes_total",
            "",
            counters,
            Some(direction),
        );
    }
    header(
        &mut out,
        "tapline_events_total",
        "Events delivered to the outputs, by kind.",
        "counter",
    );
    for (kind, n) in metrics.event_counts() {
        let _ = writeln!(out, "tapline_events_total{{kind=\"{kind}\"}} {n}");
    }
    stages(&mut out, pipeline);
    let external = metrics.external.lock();
    let mut named: Vec<&str> = Vec::new();
    for e in external.iter() {
        if !named.contains(&e.name.as_str()) {
            named.push(&e.name);
            header(&mut out, &e.name, &e.help, "counter");
            for same in external.iter().filter(|x| x.name == e.name) {
                let _ = writeln!(out, "{}{} {}", same.name, same.labels, (same.read)());
            }
        }
    }
    out
}

/// Per-stage counters and the call duration histogram.
fn stages(out: &mut String, pipeline: &Pipeline) {
    type Counter = fn(&StageCounters) -> &AtomicU64;
    let counters: [(&str, &str, Counter); 6] = [
        ("calls", "Plugin hook calls made.", |c| &c.calls),
        (
            "errors",
            "Plugin calls that failed and fell back to the failure policy.",
            |c| &c.errors,
        ),
        ("timeouts", "Plugin calls that timed out.", |c| &c.timeouts),
        (
            "dropped",
            "Plugin calls not made (queue full or plugin offline).",
            |c| &c.dropped,
        ),
        (
            "ignored_verdicts",
            "Non-pass verdicts observed in capture mode.",
            |c| &c.ignored_verdicts,
        ),
        ("busy_seconds", "Time spent in plugin calls.", |c| {
            &c.busy_micros
        }),
    ];
    let labels: Vec<String> = pipeline
        .stages()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut l = String::new();
            label_set(&mut l, &[("stage", s.name()), ("index", &i.to_string())]);
            l
        })
        .collect();
    for (suffix, help, get) in counters {
        let name = format!("tapline_plugin_{suffix}_total");
        header(out, &name, help, "counter");
        for (stage, l) in pipeline.stages().iter().zip(&labels) {
            let value = StageCounters::get(get(stage.counters()));
            if suffix == "busy_seconds" {
                let _ = writeln!(out, "{name}{l} {}", value as f64 / 1e6);
            } else {
                let _ = writeln!(out, "{name}{l} {value}");
            }
        }
    }
    let name = "tapline_plugin_call_duration_seconds";
    header(out, name, "Duration of plugin calls.", "histogram");
    for (stage, l) in pipeline.stages().iter().zip(&labels) {
        let c = stage.counters();
        let inner = &l[1..l.len() - 1];
        let mut cumulative = 0;
        for (i, bucket) in c.latency_buckets.iter().enumerate() {
            cumulative += StageCounters::get(bucket);
            let le = match LATENCY_BUCKETS_MICROS.get(i) {
                Some(&micros) => (micros as f64 / 1e6).to_string(),
                None => "+Inf".into(),
            };
            let _ = writeln!(out, "{name}_bucket{{{inner},le=\"{le}\"}} {cumulative}");
        }
        let sum = StageCounters::get(&c.busy_micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{l} {sum}");
        let _ = writeln!(out, "{name}_count{l} {cumulative}");
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample per (mode, protocol); with a header unless `direction` is given (the caller
/// wrote it once for both directions).
fn by_flow_kind(
    out: &mut String,
    name: &str,
    help: &str,
    counters: &ByFlowKind,
    direction: Option<&str>,
) {
    if direction.is_none() {
        header(out, name, help, "counter");
    }
    for (m, mode) in MODES.iter().enumerate() {
        for (p, protocol) in PROTOCOLS.iter().enumerate() {
            let value = counters[m][p].load(Ordering::Relaxed);
            let _ = write!(
                out,
                "{name}{{mode=\"{}\",protocol=\"{}\"",
                mode.as_str(),
                protocol.as_str()
            );
            if let Some(d) = direction {
                let _ = write!(out, ",direction=\"{d}\"");
            }
            let _ = writeln!(out, "}} {value}");
        }
    }
}

/// `{a="x",b="y"}` with values escaped; nothing for no labels.
fn label_set(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Parses `--metrics`: a port (on 127.0.0.1), `:PORT`, or `HOST:PORT`.
pub fn parse_address(s: &str) -> Result<SocketAddr, MetricsError> {
    let bad = || MetricsError::BadAddress(s.to_string());
    let t = s.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// A tiny HTTP server answering `GET /metrics` on a background thread.
pub struct MetricsServer {
    addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and serves what `render` returns.
    pub fn start(
        addr: SocketAddr,
        render: impl Fn() -> String + Send + 'static,
    ) -> Result<MetricsServer, MetricsError> {
        let listener = TcpListener::bind(addr).map_err(|e| MetricsError::Bind(addr, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| MetricsError::Bind(addr, e))?;
        std::thread::Builder::new()
            .name("tapline-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            if let Err(e) = answer(stream, &render) {
                                tracing::debug!("metrics request: {e}");
                            }
                        }
                        Err(e) => tracing::debug!("metrics accept: {e}"),
                    }
                }
            })
            .map_err(|e| MetricsError::Bind(addr, e))?;
        Ok(MetricsServer { addr: local })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads one request head and answers it, then closes.
fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let (status, content_type, body) = loop {
        match RequestHead::parse(&head, Strictness::Strict) {
            Ok(Some(request)) => break route(request.method(), request.target(), render),
            Ok(None) if head.len() < MAX_HEAD => {}
            _ => break (400, "text/plain", "send GET /metrics\n".to_string()),
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let headers = Headers(vec![("Content-Type".into(), content_type.into())]);
    let mut response = Vec::with_capacity(body.len() + 128);
    write_response(
        &mut response,
        &HttpResponse::new(status, headers, body.into()),
        true,
    );
    stream.write_all(&response)?;
    stream.flush()
}

/// Largest request head the endpoint reads.
const MAX_HEAD: usize = 16 * 1024;

/// The status, content type and body for `method target`.
fn route(method: &str, target: &str, render: &dyn Fn() -> String) -> (u16, &'static str, String) {
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics" | "/") => (200, "text/plain; version=0.0.4; charset=utf-8", render()),
        ("GET", _) => (404, "text/plain", "try /metrics\n".to_string()),
        _ => (405, "text/plain", "GET /metrics\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tapline_core::{FlowEnd, NullSink};

    use super::*;
    use crate::testing::*;

    #[test]
    fn counts_flows_bytes_and_events() {
        let m = Metrics::new();
        m.emit(&event(EventKind::FlowStart));
        m.emit(&event(EventKind::HttpResponse(response())));
        m.emit(&event(flow_end(FlowEnd::Fin)));
        let drops = m.counter("tapline_capture_dropped_packets_total", "Packets dropped.");
        m.register("tapline_x_total", "X.", &[("target", "t")], || 2);
        drops.fetch_add(5, Ordering::Relaxed);
        let text = render(&m, &Pipeline::new(Vec::new(), Arc::new(NullSink)));
        for line in [
            "tapline_flows_started_total{mode=\"proxy\",protocol=\"http\"} 1",
            "tapline_flows_ended_total{mode=\"proxy\",protocol=\"http\"} 1",
            "tapline_flow_bytes_total{mode=\"proxy\",protocol=\"http\",direction=\"from_client\"} 100",
            "tapline_flow_bytes_total{mode=\"proxy\",protocol=\"http\",direction=\"from_server\"} 2048",
            "tapline_events_total{kind=\"http_response\"} 1",
            "tapline_events_total{kind=\"alert\"} 0",
            "# TYPE tapline_capture_dropped_packets_total counter",
            "tapline_capture_dropped_packets_total 5",
            "tapline_x_total{target=\"t\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(
            m.external_counts(),
            [("Packets dropped".to_string(), 5), ("X (t)".to_string(), 2)]
        );
    }

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(
            parse_address("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_address(":9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_address("[::1]:1").unwrap(),
            "[::1]:1".parse().unwrap()
        );
        assert!(parse_address("nine").is_err());
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        label_set(&mut s, &[("stage", "a\"b\\c\nd"), ("index", "0")]);
        assert_eq!(s, "{stage=\"a\\\"b\\\\c\\nd\",index=\"0\"}");
    }
}
