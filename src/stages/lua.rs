//! Lua plugin stages (wired by the Lua work).

use std::path::Path;
use std::sync::Arc;

use tapline_core::{Mode, Stage, StageContext};

use crate::cli::PluginArgs;
use crate::exit::usage;

/// Loads Lua plugins sharing one `tap.shared` dictionary and the `--plugin-arg` values.
pub struct Host;

impl Host {
    /// Prepares the host.
    pub fn new(_args: &PluginArgs, _mode: Mode, _ctx: &StageContext) -> anyhow::Result<Host> {
        Ok(Host)
    }

    /// Loads one plugin file.
    pub fn load(&self, path: &Path) -> anyhow::Result<Arc<dyn Stage>> {
        usage!("{}: Lua plugins are not supported yet", path.display())
    }
}
