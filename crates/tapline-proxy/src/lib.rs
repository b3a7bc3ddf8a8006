//! tapline's intercepting proxy: an HTTP forward proxy that also serves `CONNECT` tunnels on
//! one address, and mapping proxies `LISTEN=SCHEME://HOST:PORT` (raw TCP, PostgreSQL, TLS,
//! HTTP reverse proxy), with TLS interception on tunnels, `https` and `psql` mappings. Every flow reaches the pipeline through its
//! [`Dispatch`](tapline_core::Dispatch): HTTP requests and responses through the request and
//! response hooks, relayed bytes through the chunk hooks, decoded PostgreSQL messages to the
//! observers.
//!
//! Modules: [`mapping`] parses specs; `server` binds, accepts and stops (with `stop`'s
//! phases); `context` is what connections share (limits, upstream pool, loop refusal);
//! `flows` opens and ends flows; `conn` names the byte streams (TCP, TLS); `http` serves
//! HTTP (forward, reverse and intercepted: its `exchange` state machine, the `driver` I/O
//! loop, `target`, `upstream`, `tls_upstream` and `pool`); `connect` opens tunnels; `tls`
//! intercepts (handshakes, then HTTP or relay); `postgres` negotiates PostgreSQL's SSL;
//! `relay` moves raw bytes (with `splice` between TCP sockets); `raw_mapping` serves raw
//! mappings; `errors` says what went wrong. HTTP/1 itself (heads, framing, bodies,
//! writing) is the shared codec in `tapline_decode::http1`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod connect;
mod context;
mod errors;
mod fd_limit;
mod flows;
mod http;
pub mod mapping;
mod pg_relay;
mod postgres;
mod raw_mapping;
mod relay;
mod server;
mod splice;
mod stop;
mod tls;

pub use context::Limits;
pub use errors::ProxyError;
pub use fd_limit::{connections_within, raise_open_files_limit};
pub use mapping::{MappingSpec, Scheme, SpecError};
pub use server::{ListenerInfo, Proxy, ProxyConfig, GRACE};
pub use tls::{TlsCounters, TlsOptions, TlsTotals, UpstreamTlsMode};
