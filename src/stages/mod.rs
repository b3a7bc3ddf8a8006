//! Builds the ordered list of pipeline stages from the command line (and config file):
//! Lua and gRPC plugins in the order they were declared, then the built-in faults.

mod faults;
mod grpc;
mod lua;

use std::path::PathBuf;
use std::sync::Arc;

use tapline_core::{Mode, Stage, StageContext};

use crate::cli::{FaultArgs, PluginArgs};

/// One plugin as declared on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSpec {
    /// `--plugin FILE.lua`
    Lua(PathBuf),
    /// `--grpc-plugin URL`
    Grpc(String),
}

/// The plugins of `args` in declaration order. clap keeps each flag's values in order but
/// not their interleaving, so the order is recovered from where each value stands in argv.
pub fn declared(args: &PluginArgs, argv: &[String]) -> Vec<StageSpec> {
    let mut positioned: Vec<(usize, StageSpec)> = Vec::new();
    let mut lua = args.lua.iter();
    let mut grpc = args.grpc.iter();
    for (i, word) in argv.iter().enumerate() {
        let flag = word.split('=').next().unwrap_or("");
        match flag {
            "--plugin" => {
                if let Some(p) = lua.next() {
                    positioned.push((i, StageSpec::Lua(p.clone())));
                }
            }
            "--grpc-plugin" => {
                let value = word
                    .split_once('=')
                    .map(|(_, v)| v)
                    .or(argv.get(i + 1).map(|s| s.as_str()));
                let n = value.map(|v| v.split(',').count()).unwrap_or(1);
                for _ in 0..n {
                    if let Some(u) = grpc.next() {
                        positioned.push((i, StageSpec::Grpc(u.clone())));
                    }
                }
            }
            _ => {}
        }
    }
    // Values that came from elsewhere (config file) follow, in their own order.
    positioned.extend(lua.map(|p| (usize::MAX, StageSpec::Lua(p.clone()))));
    positioned.extend(grpc.map(|u| (usize::MAX, StageSpec::Grpc(u.clone()))));
    positioned.sort_by_key(|(i, _)| *i);
    positioned.into_iter().map(|(_, s)| s).collect()
}

/// Loads and connects every plugin, in order, then appends the faults (proxy only).
pub async fn build(
    args: &PluginArgs,
    faults: Option<(&FaultArgs, Option<std::time::Duration>)>,
    mode: Mode,
    ctx: &StageContext,
) -> anyhow::Result<Vec<Arc<dyn Stage>>> {
    let argv = crate::cli::EFFECTIVE_ARGV
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args().collect());
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    let lua_host = lua::Host::new(args, mode, ctx)?;
    for spec in declared(args, &argv) {
        match spec {
            StageSpec::Lua(path) => stages.push(lua_host.load(&path)?),
            StageSpec::Grpc(url) => stages.push(grpc::connect(&url, args, mode, ctx).await?),
        }
    }
    if let Some((fault_args, duration)) = faults {
        stages.extend(faults::build(fault_args, duration)?);
    }
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn interleaved_plugins_keep_their_order() {
        let args = PluginArgs {
            lua: vec!["a.lua".into(), "b.lua".into()],
            grpc: vec![
                "http://x:1".into(),
                "http://y:2".into(),
                "http://z:3".into(),
            ],
            ..Default::default()
        };
        let order = declared(
            &args,
            &argv("tapline proxy --grpc-plugin http://x:1,http://y:2 --plugin a.lua --grpc-plugin=http://z:3 --plugin b.lua"),
        );
        assert_eq!(
            order,
            vec![
                StageSpec::Grpc("http://x:1".into()),
                StageSpec::Grpc("http://y:2".into()),
                StageSpec::Lua("a.lua".into()),
                StageSpec::Grpc("http://z:3".into()),
                StageSpec::Lua("b.lua".into()),
            ]
        );
    }
}
