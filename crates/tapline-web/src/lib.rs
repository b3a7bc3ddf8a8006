//! The live web view (`--web ADDR`): a bounded [`History`] of the run's transactions, flow
//! ends and plugin records, filled as an event sink, and a [`WebServer`] that serves the
//! embedded single-page view, the rows, a live stream of new rows (server-sent events), the
//! run's stats, and downloads as JSON lines or HAR.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod filter;
mod history;
mod row;
mod server;
mod stall;

use std::net::SocketAddr;

pub use filter::{Filter, FilterError};
pub use history::History;
pub use server::{Shared, WebServer};

/// Why an address cannot be served as asked.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Off loopback the view shows traffic to anyone who can reach it: a token is required.
    #[error("--web {0} is not a loopback address: give --web-token TOKEN (required off loopback)")]
    NeedsToken(SocketAddr),
}

/// Checks that `addr` may be served with (or without) a token.
pub fn check_address(addr: SocketAddr, token: Option<&str>) -> Result<(), AddressError> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(AddressError::NeedsToken(addr))
    }
}
