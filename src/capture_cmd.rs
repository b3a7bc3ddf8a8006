//! `tapline capture`: opens the source, shards flows across workers (wired by the capture work).

use crate::cli::CaptureArgs;
use crate::exit::usage;

/// Runs a capture until the source ends, `-c`, a signal or `--duration`.
pub fn run(_args: CaptureArgs) -> anyhow::Result<()> {
    usage!("tapline capture is not implemented yet")
}
