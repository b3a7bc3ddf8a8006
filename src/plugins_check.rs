//! `tapline plugins check`: load, connect, print metadata and capabilities.

use crate::cli::PluginArgs;
use crate::exit::usage;

/// Loads every plugin and prints what it is.
pub async fn run(_args: PluginArgs) -> anyhow::Result<()> {
    usage!("tapline plugins check is not implemented yet")
}
