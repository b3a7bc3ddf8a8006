//! `tapline plugins check`: load every Lua plugin and probe every gRPC plugin, printing what
//! each one is. Exit 2 when a Lua plugin fails to load, 1 when a gRPC plugin is unreachable.

use tapline_core::Mode;
use tapline_lua::{Host, HostConfig, PluginArg};

use crate::cli::PluginArgs;
use crate::exit::usage;

/// Loads every plugin and prints what it is.
pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    if args.lua.is_empty() && args.grpc.is_empty() {
        usage!("plugins check: give at least one --plugin FILE.lua or --grpc-plugin URL");
    }
    let mut config = HostConfig::new(Mode::Proxy);
    config.states = 1;
    config.hook_budget = args.hook_budget;
    config.args = match PluginArg::parse_all(&args.plugin_args) {
        Ok(a) => a,
        Err(e) => usage!("{e}"),
    };
    let host = Host::new(config);
    let mut load_failures = Vec::new();
    for path in &args.lua {
        match host.load(path) {
            Ok(plugin) => println!("lua  {}", plugin.info()),
            Err(e) => {
                let line = e.to_string();
                println!("lua  {}: FAILED: {line}", path.display());
                load_failures.push(line);
            }
        }
    }
    if load_failures.is_empty() {
        for arg in host.unused_args() {
            println!(
                "warning: --plugin-arg {}={}: no plugin is called that",
                arg.target, arg.value
            );
        }
    }
    let mut unreachable = Vec::new();
    for url in &args.grpc {
        match tapline_grpc::probe(url, args.plugin_timeout).await {
            Ok(description) => println!("grpc {url}: {description}"),
            Err(tapline_grpc::GrpcError::InvalidAddress { reason, .. }) => {
                println!("grpc {url}: FAILED: {reason}");
                load_failures.push(format!("{url}: {reason}"));
            }
            Err(e) => {
                println!("grpc {url}: FAILED: {e}");
                unreachable.push(format!("{url}: {e}"));
            }
        }
    }
    if let Some(first) = load_failures.first() {
        usage!("plugins check: {first}");
    }
    if let Some(first) = unreachable.first() {
        anyhow::bail!("plugins check: {first}");
    }
    Ok(())
}
