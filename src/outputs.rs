//! Builds the event sink from the output options (wired by the outputs work).

use std::path::Path;
use std::sync::Arc;

use tapline_core::{EventSink, Mode, NullSink, Pipeline};

use crate::cli::OutputArgs;

/// Every output of the run behind one sink, plus what runs beside it (metrics).
pub struct Outputs {
    /// Where every event goes.
    pub sink: Arc<dyn EventSink>,
}

/// Builds the outputs: human text or JSON lines on stdout, `--output` file, syslog, and for
/// the proxy the `-w` pcap export.
pub fn build(
    _args: &OutputArgs,
    _mode: Mode,
    _pcap_export: Option<&Path>,
) -> anyhow::Result<Outputs> {
    Ok(Outputs {
        sink: Arc::new(NullSink),
    })
}

impl Outputs {
    /// Starts the `--metrics` endpoint, if asked for, reading the pipeline's counters.
    pub fn serve_metrics(&self, _pipeline: &Pipeline) -> anyhow::Result<()> {
        Ok(())
    }

    /// At the end of a run: flush everything and print the end-of-run stats (plugin calls,
    /// errors, drops) on stderr.
    pub fn finish(&self, _pipeline: &Pipeline) {
        self.sink.flush();
    }
}
