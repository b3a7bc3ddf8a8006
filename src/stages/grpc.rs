//! gRPC plugin stages: one [`tapline_grpc::GrpcStage`] per `--grpc-plugin` address.

use std::sync::Arc;

use tapline_core::{Mode, Stage, StageContext};
use tapline_grpc::{GrpcConfig, GrpcError, GrpcStage};

use crate::cli::PluginArgs;
use crate::exit::usage;

/// Connects to one gRPC plugin (registered offline, with a warning, if unreachable). A bad
/// address is a usage error naming it.
pub async fn connect(
    url: &str,
    args: &PluginArgs,
    mode: Mode,
    _ctx: &StageContext,
) -> anyhow::Result<Arc<dyn Stage>> {
    let mut config = GrpcConfig::new(url, mode);
    config.timeout = args.plugin_timeout;
    match GrpcStage::connect(config).await {
        Ok(stage) => Ok(stage),
        Err(GrpcError::InvalidAddress { reason, .. }) => {
            usage!("--grpc-plugin {url}: {reason}")
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("--grpc-plugin {url}"))),
    }
}
