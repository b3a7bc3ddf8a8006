//! Built-in network fault stages (wired by the faults work).

use std::sync::Arc;
use std::time::Duration;

use tapline_core::Stage;

use crate::cli::FaultArgs;

/// The fault stages the flags ask for.
pub fn build(
    _args: &FaultArgs,
    _duration: Option<Duration>,
) -> anyhow::Result<Vec<Arc<dyn Stage>>> {
    Ok(Vec::new())
}
