//! Flows: one TCP connection (or UDP 5-tuple in capture) and how it ended.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::time::Timestamp;
use crate::tls::TlsInfo;

/// A flow's identifier, unique within one run. APIs show it as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<FlowId> for String {
    fn from(id: FlowId) -> String {
        id.to_string()
    }
}

/// A flow's identifier unique beyond one run (across runs, agents and hosts): a random
/// version 4 UUID, shown as its hyphenated text. fault (lueur) sends such an id to gRPC
/// plugins, and JSON events carry it as `flow_uid`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowUid(uuid::Uuid);

impl FlowUid {
    /// A fresh random id.
    pub fn random() -> Self {
        FlowUid(uuid::Uuid::new_v4())
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for FlowUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for FlowUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowUid({self})")
    }
}

impl Serialize for FlowUid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Hands out [`FlowId`]s, starting at 1.
#[derive(Debug, Default)]
pub struct FlowIds(AtomicU64);

impl FlowIds {
    /// A fresh id source.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id.
    pub fn next_id(&self) -> FlowId {
        FlowId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Where traffic came from: the intercepting proxy or passive capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `tapline proxy`.
    Proxy,
    /// `tapline capture`.
    Capture,
    /// `tapline replay`: traffic tapline sends again from a capture.
    Replay,
}

impl Mode {
    /// The name used in every API (`proxy`, `capture`, `replay`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Capture => "capture",
            Mode::Replay => "replay",
        }
    }
}

/// The application protocol a flow carries, as far as tapline knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.x.
    Http,
    /// TLS (opaque to tapline), e.g. inside a CONNECT tunnel.
    Tls,
    /// PostgreSQL frontend/backend protocol 3.0.
    Postgres,
    /// Any other TCP stream.
    Tcp,
    /// A UDP 5-tuple (capture only).
    Udp,
}

impl Protocol {
    /// The name used in every API (`http`, `tls`, `postgres`, `tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Postgres => "postgres",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of a flow sent some bytes or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The end that opened the connection.
    Client,
    /// The end that accepted it.
    Server,
}

impl Side {
    /// The name used in every API (`client`, `server`).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The other end.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// How a flow reached tapline; plugins are routed by it (gRPC capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// A request to the HTTP forward proxy.
    Forward,
    /// A `CONNECT` tunnel on the forward proxy.
    Tunnel,
    /// A mapping proxy (`--proxy LISTEN=SCHEME://HOST:PORT`).
    Mapping,
    /// Passive capture.
    Capture,
    /// A connection `tapline replay` opened to send captured traffic again.
    Replay,
}

impl Route {
    /// The name used in JSON (`forward`, `tunnel`, `mapping`, `capture`, `replay`).
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Forward => "forward",
            Route::Tunnel => "tunnel",
            Route::Mapping => "mapping",
            Route::Capture => "capture",
            Route::Replay => "replay",
        }
    }
}

/// One connection: who talked to whom, over what, since when. Shared read-only by events
/// (`Arc<Flow>`); counters live in [`FlowStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Unique in the run; short, for people (human output).
    pub id: FlowId,
    /// Unique beyond the run (`flow_uid` in JSON, the gRPC tunnel id).
    pub uid: FlowUid,
    /// Proxy or capture.
    pub mode: Mode,
    /// What the flow carries.
    pub protocol: Protocol,
    /// How it reached tapline.
    pub route: Route,
    /// The connecting end, `ip:port`.
    pub client: SocketAddr,
    /// The accepting end, `ip:port` (proxy: the upstream).
    pub server: SocketAddr,
    /// When the flow started.
    pub started: Timestamp,
    /// Its TLS, when the flow carried TLS the proxy saw (terminated or relayed).
    pub tls: Option<std::sync::Arc<TlsInfo>>,
}

impl Flow {
    /// A flow with a fresh [`FlowUid`].
    pub fn new(
        id: FlowId,
        mode: Mode,
        protocol: Protocol,
        route: Route,
        client: SocketAddr,
        server: SocketAddr,
        started: Timestamp,
    ) -> Flow {
        Flow {
            id,
            uid: FlowUid::random(),
            mode,
            protocol,
            route,
            client,
            server,
            started,
            tls: None,
        }
    }

    /// The same flow, with what its TLS looked like.
    pub fn with_tls(mut self, tls: TlsInfo) -> Flow {
        self.tls = Some(std::sync::Arc::new(tls));
        self
    }
}

/// Bytes and packets each way, as totalled at the end of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Payload bytes sent by the client.
    pub bytes_from_client: u64,
    /// Payload bytes sent by the server.
    pub bytes_from_server: u64,
    /// Packets (capture) or reads (proxy) from the client.
    pub packets_from_client: u64,
    /// Packets (capture) or reads (proxy) from the server.
    pub packets_from_server: u64,
}

impl FlowStats {
    /// Counts one packet or read of `len` payload bytes from `side`.
    pub fn add(&mut self, side: Side, len: usize) {
        match side {
            Side::Client => {
                self.bytes_from_client += len as u64;
                self.packets_from_client += 1;
            }
            Side::Server => {
                self.bytes_from_server += len as u64;
                self.packets_from_server += 1;
            }
        }
    }
}

/// How a flow ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowEnd {
    /// Orderly close (FIN, or EOF on both sides).
    Fin,
    /// Reset.
    Rst,
    /// No traffic for the idle timeout.
    Timeout,
    /// A plugin closed it, with its reason.
    ClosedByPlugin(String),
    /// The run stopped while the flow was open.
    Shutdown,
    /// An I/O or protocol error.
    Error(String),
}

impl FlowEnd {
    /// The short name used in JSON (`fin`, `rst`, `timeout`, `closed_by_plugin`, `shutdown`, `error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FlowEnd::Fin => "fin",
            FlowEnd::Rst => "rst",
            FlowEnd::Timeout => "timeout",
            FlowEnd::ClosedByPlugin(_) => "closed_by_plugin",
            FlowEnd::Shutdown => "shutdown",
            FlowEnd::Error(_) => "error",
        }
    }

    /// The reason text for ends that carry one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            FlowEnd::ClosedByPlugin(r) | FlowEnd::Error(r) => Some(r),
            _ => None,
        }
    }
}
