//! The `tapline` binary: parses the command line and wires crates into a run.
#![forbid(unsafe_code)]

mod ca_cmd;
mod capture_cmd;
mod cli;
mod collect_cmd;
mod collect_lines;
mod config;
mod demo;
mod exit;
mod outputs;
mod plugins_check;
mod proxy_cmd;
mod replay_cmd;
mod shutdown;
mod stages;
mod tls_setup;
mod web_view;

use std::process::ExitCode;

use crate::cli::{Cli, Command, PluginsCommand};

fn main() -> ExitCode {
    let argv = match config::expand_argv(std::env::args().collect()) {
        Ok(argv) => argv,
        Err(e) => return exit::report(&e),
    };
    let cli = match Cli::parse_from_argv(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Proxy(args) => runtime().and_then(|rt| rt.block_on(proxy_cmd::run(*args))),
        Command::Capture(args) => capture_cmd::run(*args),
        Command::Replay(args) => replay_cmd::run(*args),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Ca(args) => ca_cmd::run(args),
        Command::Collect(args) => runtime().and_then(|rt| rt.block_on(collect_cmd::run(args))),
        Command::Plugins(PluginsCommand::Check(args)) => {
            runtime().and_then(|rt| rt.block_on(plugins_check::run(args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person watching: not in files, pipes or CI logs.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
