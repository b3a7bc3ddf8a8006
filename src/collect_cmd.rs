//! `tapline collect`: reads the events agents exported, as a member of a group of collectors
//! (JetStream durable pull consumer, Redis consumer group), and writes them to the outputs:
//! JSON lines (`--json`, `--output`) passed through as the agents wrote them (so `agent` and
//! `event_id` stay), human lines rendered from them, and counters by agent and kind for
//! `--metrics` and the end-of-run stats, and the `--web` view's rows (without the HTTP heads
//! and bodies that JSON lines leave out). A batch is acknowledged once the outputs have
//! written it, so a collector that dies leaves its batch to be delivered again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapline_core::{EventSink, NullSink, Pipeline};
use tapline_export::{Consumer, Delivery, Target};
use tapline_output::metrics::{self, Metrics, MetricsServer};
use tapline_output::{LineFormat, LineSink};

use crate::cli::CollectArgs;
use crate::collect_lines;
use crate::exit::usage;
use crate::shutdown::Shutdown;
use crate::web_view::WebView;

/// Events asked for per fetch.
const BATCH: usize = 1024;
/// Longest wait of one fetch.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The collector's outputs and counters.
struct Outputs {
    json: Option<LineSink>,
    file: Option<LineSink>,
    human: Option<LineSink>,
    metrics: Arc<Metrics>,
    by_agent_kind: HashMap<(String, String), Arc<AtomicU64>>,
    /// `--web`: the collected events' rows.
    web: Option<WebView>,
}

/// Runs until a signal, `--duration` or `--idle-exit`.
pub async fn run(args: CollectArgs) -> anyhow::Result<()> {
    let target: Target = match args.from.parse() {
        Ok(t) => t,
        Err(e) => usage!("--from: {e}"),
    };
    let mut outputs = Outputs::build(&args)?;
    serve_metrics(&args, &outputs.metrics)?;
    if let Some(web) = &outputs.web {
        let history = web.capacity();
        web.serve(Box::new(
            move || serde_json::json!({ "history": history, "stages": [] }),
        ))?;
    }
    let settings = crate::outputs::broker_settings(&args.broker);
    let member = format!("{}-{}", crate::outputs::host_name(), std::process::id());
    let mut shutdown = Shutdown::install(args.duration);
    let mut consumer: Option<Consumer> = None;
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    let mut last_event = Instant::now();
    loop {
        if args
            .idle_exit
            .is_some_and(|idle| last_event.elapsed() >= idle)
        {
            tracing::info!("--idle-exit: no event for {:?}, stopping", args.idle_exit);
            break;
        }
        let Some(c) = consumer.as_mut() else {
            let connect = Consumer::connect(&target, &settings, &args.group, &member);
            tokio::select! {
                _ = shutdown.wait() => break,
                result = connect => match result {
                    Ok(c) => {
                        consumer = Some(c);
                        backoff = Duration::from_millis(100);
                        warned = false;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!("collect {target}: broker unreachable ({e}); retrying");
                            warned = true;
                        }
                        tokio::select! {
                            _ = shutdown.wait() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
            }
            continue;
        };
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = c.fetch(BATCH, FETCH_WAIT) => d,
        };
        let result = match delivery {
            Ok(d) if d.is_empty() => Ok(()),
            Ok(d) => {
                last_event = Instant::now();
                outputs.write(&d);
                c.ack(&d).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("collect {target}: {e}; reconnecting");
            consumer = None;
        }
    }
    outputs.finish();
    Ok(())
}

impl Outputs {
    fn build(args: &CollectArgs) -> anyhow::Result<Outputs> {
        let json = args.json.then(|| LineSink::stdout(LineFormat::Json));
        let human = (!args.json && !args.quiet).then(|| LineSink::stdout(LineFormat::Human));
        let file = match &args.output {
            None => None,
            Some(path) => match LineSink::file(path, LineFormat::Json) {
                Ok(sink) => Some(sink),
                Err(e) => usage!("--output {}: {e}", path.display()),
            },
        };
        Ok(Outputs {
            json: json.transpose()?,
            human: human.transpose()?,
            file,
            metrics: Arc::new(Metrics::new()),
            by_agent_kind: HashMap::new(),
            web: WebView::from_args(&args.view)?,
        })
    }

    /// Writes a delivery to every output and waits until the lines are written.
    fn write(&mut self, delivery: &Delivery) {
        let mut line = Vec::new();
        let mut text = String::new();
        for payload in delivery.payloads() {
            if payload.is_empty() {
                tracing::warn!("collect: an entry without an event");
                continue;
            }
            line.clear();
            line.extend_from_slice(payload);
            line.push(b'\n');
            for sink in [&self.json, &self.file].into_iter().flatten() {
                sink.write_line(&line);
            }
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(payload) else {
                tracing::warn!("collect: an entry that is not a JSON object");
                continue;
            };
            if let Some(human) = &self.human {
                text.clear();
                if collect_lines::describe(&event, &mut text) {
                    text.push('\n');
                    human.write_line(text.as_bytes());
                }
            }
            self.count(&event);
            if let Some(web) = &self.web {
                web.history().push_object(event);
            }
        }
        for sink in [&self.json, &self.file, &self.human].into_iter().flatten() {
            sink.flush();
        }
    }

    /// Counts an event under its agent and kind.
    fn count(&mut self, event: &serde_json::Value) {
        let field = |name: &str| event[name].as_str().unwrap_or("-").to_string();
        let key = (field("agent"), field("kind"));
        let counter = self
            .by_agent_kind
            .entry(key)
            .or_insert_with_key(|(agent, kind)| {
                let counter = Arc::new(AtomicU64::new(0));
                let read = counter.clone();
                self.metrics.register(
                    "tapline_collect_events_total",
                    "Events collected.",
                    &[("agent", agent), ("kind", kind)],
                    move || read.load(Ordering::Relaxed),
                );
                counter
            });
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Flushes the outputs and prints the counts on stderr.
    fn finish(&self) {
        for sink in [&self.json, &self.file, &self.human].into_iter().flatten() {
            sink.flush();
        }
        let counts = self.metrics.external_counts();
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        eprintln!("tapline: collected {total} events");
        for (what, n) in counts {
            eprintln!("tapline: {what}: {n}");
        }
    }
}

/// Serves `--metrics`, if asked for.
fn serve_metrics(args: &CollectArgs, registry: &Arc<Metrics>) -> anyhow::Result<()> {
    let Some(addr) = args.metrics.as_deref() else {
        return Ok(());
    };
    let addr = match metrics::parse_address(addr) {
        Ok(a) => a,
        Err(e) => usage!("{e}"),
    };
    let pipeline = Pipeline::new(Vec::new(), Arc::new(NullSink));
    let registry = registry.clone();
    match MetricsServer::start(addr, move || metrics::render(&registry, &pipeline)) {
        Ok(server) => {
            tracing::info!("metrics on http://{}/metrics", server.local_addr());
            Ok(())
        }
        Err(e) => usage!("{e}"),
    }
}
