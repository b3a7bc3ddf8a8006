//! tapline's intercepting proxy: an HTTP forward proxy that also serves `CONNECT` tunnels on
//! one address, and mapping proxies `LISTEN=SCHEME://HOST:PORT` (raw TCP, PostgreSQL, TLS,
//! HTTP reverse proxy). Every flow goes through the [`Pipeline`](tapline_core::Pipeline):
//! HTTP requests and responses through its request/response hooks, relayed bytes through its
//! chunk hooks, decoded PostgreSQL messages to its observers.
//!
//! Modules: [`mapping`] parses specs; `server` binds, accepts and stops (with `stop`'s
//! phases); `context` is what connections share (limits, upstream pool, loop refusal);
//! `flows` opens and ends flows; `forward` serves HTTP (forward and reverse), one task per
//! client connection; `head` parses and writes HTTP/1 heads (`hop_by_hop` says which fields
//! stay on one hop), `framing` finds where bodies end, `wire` reads and pumps bytes; `pool`
//! keeps upstream keep-alive connections; `connect` opens tunnels; `relay` moves raw bytes
//! (with `splice` between TCP sockets); `raw_mapping` serves raw mappings; `errors` says
//! what went wrong.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connect;
mod context;
mod errors;
mod flows;
mod forward;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod head;
mod hop_by_hop;
pub mod mapping;
mod pool;
mod raw_mapping;
mod relay;
mod server;
mod splice;
mod stop;
mod wire;

pub use context::Limits;
pub use errors::ProxyError;
pub use mapping::{MappingSpec, Scheme, SpecError};
pub use server::{ListenerInfo, Proxy, ProxyConfig, GRACE};
