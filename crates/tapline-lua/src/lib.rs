//! tapline's in-process Lua plugin host (vendored Lua 5.4 through mlua).
//!
//! A [`Host`] loads plugin files into [`LuaPlugin`] pipeline stages. Each plugin gets one Lua
//! state per worker; every event of a flow goes to the same state (picked from the flow id), so
//! `flow.state` and per-flow order hold. The `tap` API (`tap.emit`, `tap.alert`, `tap.respond`,
//! `tap.shared`, …) is installed in every state; modules written for riff (`init`/`push`/
//! `match`/`action`) run unchanged through the [`riff`] adapter. A [`Reloader`] loads plugin files
//! again when they change (or on SIGHUP) while the run goes on; [`PluginStatus`] says which
//! version of each runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod budget;
mod error;
mod host;
mod lent;
mod objects;
mod plugin;
mod reload;
pub mod riff;
mod shared;
mod slot;
mod state;
mod watch;

pub use error::LuaError;
pub use host::{Host, HostConfig, PluginArg, PluginInfo, PluginKind};
pub use plugin::LuaPlugin;
pub use reload::{PluginStatus, ReloadOutcome};
pub use shared::SharedDict;
pub use watch::{ReloadHandle, Reloader};
