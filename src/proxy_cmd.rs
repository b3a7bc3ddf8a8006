//! `tapline proxy`: builds the pipeline and starts the listeners (wired by the proxy work).

use crate::cli::ProxyArgs;
use crate::exit::usage;

/// Runs the proxy until a signal or `--duration`.
pub async fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    usage!("tapline proxy is not implemented yet")
}
