//! Builds the ordered list of pipeline stages from the command line (and config file):
//! Lua and gRPC plugins in the order they were declared, then the built-in faults; and the
//! reloader of the Lua plugins.

mod faults;
mod grpc;
mod lua;
mod sql_faults;

use std::sync::Arc;

use tapline_core::{EventSink, FailurePolicy, Mode, Pipeline, Stage, StageContext};
use tapline_lua::{LuaPlugin, Reloader};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{self, FaultArgs, PluginArgs, PluginSpec};

/// A run's stages in order, and the Lua plugins among them (which can be reloaded).
pub struct Stages {
    /// Every stage, in pipeline order.
    pub all: Vec<Arc<dyn Stage>>,
    /// The Lua plugins, in pipeline order.
    pub lua: Vec<Arc<LuaPlugin>>,
}

/// Loads and connects every plugin, in order, then appends the faults (proxy only).
pub async fn build(
    args: &PluginArgs,
    faults: Option<(&FaultArgs, Option<std::time::Duration>)>,
    mode: Mode,
    ctx: &StageContext,
) -> anyhow::Result<Stages> {
    let mut stages = Stages {
        all: Vec::new(),
        lua: Vec::new(),
    };
    let lua_host = lua::Host::new(args, mode, ctx)?;
    for spec in &args.pipeline {
        match spec {
            PluginSpec::Lua(path) => {
                let plugin = lua_host.load(path)?;
                stages.all.push(plugin.clone());
                stages.lua.push(plugin);
            }
            PluginSpec::Grpc(url) => stages.all.push(grpc::connect(url, args, mode, ctx).await?),
        }
    }
    if let Some((fault_args, duration)) = faults {
        stages.all.extend(faults::build(fault_args, duration)?);
    }
    Ok(stages)
}

/// Starts reloading the Lua plugins of a run (none: `None`): their folders are watched
/// unless `--no-plugin-watch`, and SIGHUP reloads them all. Must run inside the runtime;
/// drop the reloader before the pipeline's final `on_stop`.
pub fn reloader(lua: Vec<Arc<LuaPlugin>>, args: &PluginArgs) -> Option<Reloader> {
    if lua.is_empty() {
        return None;
    }
    let reloader = Reloader::start(lua, !args.no_plugin_watch);
    let handle = reloader.handle();
    tokio::spawn(async move {
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot catch SIGHUP: plugins reload only when their files change");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the Lua plugins");
            handle.reload_all();
        }
    });
    Some(reloader)
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
