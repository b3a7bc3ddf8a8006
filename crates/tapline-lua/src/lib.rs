//! tapline's in-process Lua plugin host (vendored Lua 5.4 through mlua).
//!
//! A [`Host`] loads plugin files into [`LuaPlugin`] pipeline stages. Each plugin gets one Lua
//! state per worker; every event of a flow goes to the same state (picked from the flow id), so
//! `flow.state` and per-flow order hold. The `tap` API (`tap.emit`, `tap.alert`, `tap.respond`,
//! `tap.shared`, …) is installed in every state; modules written for riff (`init`/`push`/
//! `match`/`action`) run unchanged through the [`riff`] adapter.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod budget;
mod error;
mod host;
mod lent;
mod objects;
mod plugin;
pub mod riff;
mod shared;
mod state;

pub use error::LuaError;
pub use host::{Host, HostConfig, PluginArg, PluginInfo, PluginKind};
pub use plugin::LuaPlugin;
pub use shared::SharedDict;
