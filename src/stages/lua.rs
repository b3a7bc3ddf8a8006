//! Lua plugin stages: one [`tapline_lua::Host`] per run, so every plugin shares `tap.shared`
//! and the `--plugin-arg` values.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tapline_core::{Mode, StageContext};
use tapline_lua::{HostConfig, LuaError, LuaPlugin, PluginArg};

use crate::cli::PluginArgs;
use crate::exit::usage;

/// Loads Lua plugins sharing one `tap.shared` dictionary and the `--plugin-arg` values.
pub struct Host {
    inner: tapline_lua::Host,
    /// Set when a plugin failed to load (the run stops; no more warnings then).
    failed: AtomicBool,
}

impl Host {
    /// Prepares the host: checks every `--plugin-arg` and takes the hook budget.
    pub fn new(args: &PluginArgs, mode: Mode, ctx: &StageContext) -> anyhow::Result<Host> {
        let mut config = HostConfig::new(mode);
        config.sink = ctx.sink.clone();
        config.hook_budget = args.hook_budget;
        config.args = match PluginArg::parse_all(&args.plugin_args) {
            Ok(a) => a,
            Err(e) => usage!("{e}"),
        };
        Ok(Host {
            inner: tapline_lua::Host::new(config),
            failed: AtomicBool::new(false),
        })
    }

    /// Loads one plugin file; a missing file, syntax or load error is a usage error (exit 2)
    /// naming the file and line.
    pub fn load(&self, path: &Path) -> anyhow::Result<Arc<LuaPlugin>> {
        match self.inner.load(path) {
            Ok(plugin) => Ok(plugin),
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                usage!("--plugin {}", describe(path, &e))
            }
        }
    }
}

impl Drop for Host {
    /// Once every plugin is loaded (the host goes when the stages are built), says which
    /// `--plugin-arg`s reached no plugin.
    fn drop(&mut self) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        for arg in self.inner.unused_args() {
            tracing::warn!(
                "--plugin-arg {}={}: no plugin is called that (NAME is a plugin's name field or file stem)",
                arg.target,
                arg.value
            );
        }
    }
}

/// The load error as one line that names the file.
fn describe(path: &Path, error: &LuaError) -> String {
    let text = error.to_string();
    if text.contains(&*path.to_string_lossy()) {
        text
    } else {
        format!("{}: {text}", path.display())
    }
}
