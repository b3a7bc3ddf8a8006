//! Builds the event sink from the output options: human text or JSON lines on stdout, the
//! `--output` file, the `--har` file, syslog, the `--web` view, the proxy's `-w` pcap
//! export, the `--export` to brokers, and the run's metrics (served on `--metrics`, and
//! printed as end-of-run stats).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tapline_core::{EventSink, Fanout, Mode, Pipeline};
use tapline_export::{ExportConfig, ExportError, ExportSink, Settings, Target};
use tapline_lua::LuaPlugin;
use tapline_output::metrics::{self, Metrics, MetricsServer};
use tapline_output::syslog::{parse_kinds, SyslogConfig, SyslogFormat, SyslogSink, SyslogTarget};
use tapline_output::{stats, HarSink, LineFormat, LineSink, PcapExport};

use crate::cli::{self, OutputArgs};
use crate::exit::usage;
use crate::web_view::WebView;

/// Every output of the run behind one sink, plus what runs beside it (metrics).
pub struct Outputs {
    /// Where every event goes.
    pub sink: Arc<dyn EventSink>,
    /// The run's counters (always kept: they make the end-of-run stats).
    metrics: Arc<Metrics>,
    /// Where to serve them, when `--metrics` was given.
    metrics_addr: Option<SocketAddr>,
    /// The web view, when `--web` was given.
    web: Option<WebView>,
}

/// Builds the outputs: human text or JSON lines on stdout, `--output` file, syslog, and for
/// the proxy the `-w` pcap export.
pub fn build(
    args: &OutputArgs,
    _mode: Mode,
    pcap_export: Option<&Path>,
) -> anyhow::Result<Outputs> {
    let metrics = Arc::new(Metrics::new());
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![metrics.clone()];
    if args.json {
        sinks.push(Arc::new(
            LineSink::stdout(LineFormat::Json)?.with_bodies(args.json_bodies),
        ));
    } else if !args.quiet {
        sinks.push(Arc::new(LineSink::stdout(LineFormat::Human)?));
    }
    if let Some(path) = &args.output {
        match LineSink::file(path, LineFormat::Json) {
            Ok(sink) => sinks.push(Arc::new(sink.with_bodies(args.json_bodies))),
            Err(e) => usage!("--output {}: {e}", path.display()),
        }
    }
    if let Some(path) = &args.har {
        match HarSink::create(path) {
            Ok(sink) => sinks.push(Arc::new(sink)),
            Err(e) => usage!("--har {}: {e}", path.display()),
        }
    }
    if let Some(url) = &args.syslog {
        let sink = syslog(url, args)?;
        sink.register_metrics(&metrics);
        sinks.push(Arc::new(sink));
    }
    if !args.export.is_empty() {
        let sink = export(args)?;
        sink.register_metrics(&metrics);
        sinks.push(Arc::new(sink));
    }
    if let Some(path) = pcap_export {
        match PcapExport::create(path) {
            Ok(sink) => sinks.push(Arc::new(sink)),
            Err(e) => usage!("-w {}: {e}", path.display()),
        }
    }
    let metrics_addr = match args.metrics.as_deref().map(metrics::parse_address) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(e)) => usage!("{e}"),
    };
    let web = WebView::from_args(&args.view)?;
    if let Some(web) = &web {
        sinks.push(web.history().clone());
    }
    Ok(Outputs {
        sink: Arc::new(Fanout(sinks)),
        metrics,
        metrics_addr,
        web,
    })
}

/// The `--syslog` output, with its format and event kinds.
fn syslog(url: &str, args: &OutputArgs) -> anyhow::Result<SyslogSink> {
    let target: SyslogTarget = match url.parse() {
        Ok(t) => t,
        Err(e) => usage!("--syslog: {e}"),
    };
    let kinds = match parse_kinds(&args.syslog_events) {
        Ok(k) => k,
        Err(e) => usage!("--syslog-events: {e}"),
    };
    let format = match args.syslog_format {
        cli::SyslogFormat::Rfc5424 => SyslogFormat::Rfc5424,
        cli::SyslogFormat::Rfc3164 => SyslogFormat::Rfc3164,
    };
    Ok(SyslogSink::start(SyslogConfig::new(target, format, kinds))?)
}

/// The `--export` targets, with the agent's name and its spool.
fn export(args: &OutputArgs) -> anyhow::Result<ExportSink> {
    let mut targets = Vec::with_capacity(args.export.len());
    for url in &args.export {
        match url.parse::<Target>() {
            Ok(t) => targets.push(t),
            Err(e) => usage!("--export: {e}"),
        }
    }
    let agent = match &args.agent_id {
        Some(a) if a.trim().is_empty() => usage!("--agent-id: empty"),
        Some(a) => a.clone(),
        None => host_name(),
    };
    let config = ExportConfig {
        targets,
        settings: broker_settings(&args.broker),
        spool_dir: args
            .export_spool
            .clone()
            .unwrap_or_else(|| ExportConfig::default_spool_dir(&agent)),
        agent,
        spool_max: args.export_spool_max,
        queue: tapline_export::sink::DEFAULT_QUEUE,
        flush_wait: args.export_flush_wait,
    };
    match ExportSink::start(config) {
        Ok(sink) => Ok(sink),
        Err(e @ ExportError::Spool(..)) => usage!("{e}"),
        Err(e) => Err(e.into()),
    }
}

/// Broker settings from `--export-stream` and `--export-maxlen`.
pub fn broker_settings(args: &cli::BrokerArgs) -> Settings {
    Settings {
        stream: args.export_stream.clone(),
        maxlen: args.export_maxlen,
        ..Settings::default()
    }
}

/// This machine's name (the default `--agent-id`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tapline".into())
}

impl Outputs {
    /// The run's metrics registry, for counters kept elsewhere (capture).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts the `--metrics` endpoint, if asked for, reading the pipeline's counters.
    pub fn serve_metrics(&self, pipeline: &Pipeline) -> anyhow::Result<()> {
        let Some(addr) = self.metrics_addr else {
            return Ok(());
        };
        let (metrics, pipeline) = (self.metrics.clone(), pipeline.clone());
        match MetricsServer::start(addr, move || metrics::render(&metrics, &pipeline)) {
            Ok(server) => {
                tracing::info!("metrics on http://{}/metrics", server.local_addr());
                Ok(())
            }
            Err(e) => usage!("{e}"),
        }
    }

    /// Starts the `--web` view, if asked for, showing the pipeline's stage counters and the
    /// Lua plugins' loaded versions and reload errors.
    pub fn serve_web(&self, pipeline: &Pipeline, lua: &[Arc<LuaPlugin>]) -> anyhow::Result<()> {
        match &self.web {
            Some(web) => web.serve_stages(pipeline, lua),
            None => Ok(()),
        }
    }

    /// Tells the web view the traffic source ended; true when there is a view to keep up
    /// (until a signal or `--duration`).
    pub fn source_ended(&self) -> bool {
        match &self.web {
            Some(web) => {
                web.history().end_of_source();
                true
            }
            None => false,
        }
    }

    /// At the end of a run: flush everything and print the end-of-run stats (plugin calls,
    /// errors, drops) on stderr.
    pub fn finish(&self, pipeline: &Pipeline) {
        self.sink.flush();
        eprint!("{}", stats::end_of_run(&self.metrics, pipeline));
    }
}
