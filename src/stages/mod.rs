//! Builds the ordered list of pipeline stages from the command line (and config file):
//! Lua and gRPC plugins in the order they were declared, then the built-in faults.

mod faults;
mod grpc;
mod lua;
mod sql_faults;

use std::sync::Arc;

use tapline_core::{EventSink, FailurePolicy, Mode, Pipeline, Stage, StageContext};

use crate::cli::{self, FaultArgs, PluginArgs, PluginSpec};

/// Loads and connects every plugin, in order, then appends the faults (proxy only).
pub async fn build(
    args: &PluginArgs,
    faults: Option<(&FaultArgs, Option<std::time::Duration>)>,
    mode: Mode,
    ctx: &StageContext,
) -> anyhow::Result<Vec<Arc<dyn Stage>>> {
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    let lua_host = lua::Host::new(args, mode, ctx)?;
    for spec in &args.pipeline {
        match spec {
            PluginSpec::Lua(path) => stages.push(lua_host.load(path)?),
            PluginSpec::Grpc(url) => stages.push(grpc::connect(url, args, mode, ctx).await?),
        }
    }
    if let Some((fault_args, duration)) = faults {
        stages.extend(faults::build(fault_args, duration)?);
    }
    Ok(stages)
}

/// The run's pipeline: `stages` in order, delivering to `sink`, failing as
/// `--plugin-failure` says (for every stage alike).
pub fn pipeline(
    stages: Vec<Arc<dyn Stage>>,
    sink: Arc<dyn EventSink>,
    args: &PluginArgs,
) -> Pipeline {
    let policy = match args.plugin_failure {
        cli::FailurePolicy::Open => FailurePolicy::Open,
        cli::FailurePolicy::Closed => FailurePolicy::Closed,
    };
    Pipeline::new(stages, sink).with_failure_policy(policy)
}
