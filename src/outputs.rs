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
use tapline_web::{History, Shared, WebServer};

use crate::cli::{self, OutputArgs};
use crate::exit::usage;

/// Every output of the run behind one sink, plus what runs beside it (metrics).
pub struct Outputs {
    /// Where every event goes.
    pub sink: Arc<dyn EventSink>,
    /// The run's counters (always kept: they make the end-of-run stats).
    metrics: Arc<Metrics>,
    /// Where to serve them, when `--metrics` was given.
    metrics_addr: Option<SocketAddr>,
    /// The web view's rows, address and token, when `--web` was given.
    web: Option<Web>,
}

/// The `--web` view before it is served.
struct Web {
    history: Arc<History>,
    capacity: usize,
    addr: SocketAddr,
    token: Option<String>,
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
    let web = web(args)?;
    if let Some(web) = &web {
        sinks.push(web.history.clone());
    }
    Ok(Outputs {
        sink: Arc::new(Fanout(sinks)),
        metrics,
        metrics_addr,
        web,
    })
}

/// The `--web` view's history, once its address and token are checked.
fn web(args: &OutputArgs) -> anyhow::Result<Option<Web>> {
    let Some(text) = &args.web else {
        return Ok(None);
    };
    let Ok(addr) = metrics::parse_address(text) else {
        usage!("--web {text}: not an address (HOST:PORT, or PORT for loopback)");
    };
    let token = args.web_token.clone().filter(|t| !t.is_empty());
    if let Err(e) = tapline_web::check_address(addr, token.as_deref()) {
        usage!("{e}");
    }
    if args.web_history == 0 {
        usage!("--web-history must be at least 1");
    }
    Ok(Some(Web {
        history: History::new(args.web_history),
        capacity: args.web_history,
        addr,
        token,
    }))
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
        let Some(web) = &self.web else {
            return Ok(());
        };
        let (pipeline, history, lua) = (pipeline.clone(), web.capacity, lua.to_vec());
        let shared = Shared {
            history: web.history.clone(),
            stats: Box::new(move || stage_stats(&pipeline, &lua, history)),
            token: web.token.clone(),
        };
        match WebServer::start(web.addr, shared) {
            Ok(server) => {
                eprintln!("tapline: web view on http://{}/", server.local_addr());
                Ok(())
            }
            Err(e) => usage!("--web {}: {e}", web.addr),
        }
    }

    /// Tells the web view the traffic source ended; true when there is a view to keep up
    /// (until a signal or `--duration`).
    pub fn source_ended(&self) -> bool {
        match &self.web {
            Some(web) => {
                web.history.end_of_source();
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

/// The stages' counters as the web view's header shows them; a Lua plugin's also say which
/// version of its file is loaded and why its last reload failed.
fn stage_stats(pipeline: &Pipeline, lua: &[Arc<LuaPlugin>], history: usize) -> serde_json::Value {
    use tapline_core::StageCounters;
    let statuses: Vec<_> = lua.iter().map(|p| p.status()).collect();
    let stages: Vec<serde_json::Value> = pipeline
        .stages()
        .iter()
        .map(|stage| {
            let c = stage.counters();
            let mut entry = serde_json::json!({
                "name": stage.name(),
                "family": stage.family(),
                "calls": StageCounters::get(&c.calls),
                "errors": StageCounters::get(&c.errors),
                "timeouts": StageCounters::get(&c.timeouts),
                "dropped": StageCounters::get(&c.dropped),
            });
            if let Some(status) = statuses.iter().find(|s| s.name == stage.name()) {
                entry["file"] = serde_json::json!(status.file);
                entry["version"] = serde_json::json!(status.version);
                entry["reloads"] = serde_json::json!(status.reloads);
                entry["last_error"] = serde_json::json!(status.last_error);
            }
            entry
        })
        .collect();
    serde_json::json!({ "history": history, "stages": stages })
}
