//! gRPC plugin stages (wired by the gRPC work).

use std::sync::Arc;

use tapline_core::{Mode, Stage, StageContext};

use crate::cli::PluginArgs;
use crate::exit::usage;

/// Connects to one gRPC plugin (registered offline if unreachable).
pub async fn connect(
    url: &str,
    _args: &PluginArgs,
    _mode: Mode,
    _ctx: &StageContext,
) -> anyhow::Result<Arc<dyn Stage>> {
    usage!("--grpc-plugin {url}: gRPC plugins are not supported yet")
}
