//! `tapline replay`: checks the flags, opens the input (so a missing or malformed file comes
//! first), builds the outputs and the pipeline in `replay` mode, runs the replay (a progress
//! line on stderr when it is a terminal) until it ends or a signal, then prints the
//! comparison (stdout, or stderr when stdout carries `--json` events), writes `--report`, and
//! with `--fail-on-diff` exits 1 on any difference (an interrupted replay exits 1 too).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use regex::Regex;
use tapline_core::{Mode, StageContext};
use tapline_decode::DecodeConfig;
use tapline_replay::source::PcapOptions;
use tapline_replay::{
    parse_target, PgOptions, Proto, Replay, Report, Selection, Source, SourceError, SslMode,
    Targets,
};
use tapline_tls::UpstreamTrust;

use crate::cli::{PgSslMode, ReplayArgs};
use crate::exit::{usage, UsageError};
use crate::shutdown::Shutdown;

/// Runs a replay to its end (or a signal).
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let targets = targets(&args)?;
    let selection = selection(&args)?;
    let decode = match DecodeConfig::from_args(args.plugins.body_limit, &args.plugins.decode) {
        Ok(d) => d,
        Err(e) => usage!("--decode: {e}"),
    };
    let pcap = PcapOptions {
        decode: decode.clone(),
        filter: args.filter.clone(),
    };
    let source = match Source::open(&args.read, pcap) {
        Ok(s) => s,
        Err(e) => usage!("-r {e}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut output = args.output.clone();
    output.quiet |= !output.json;
    let outputs = crate::outputs::build(&output, Mode::Replay, None)?;
    let ctx = StageContext {
        sink: outputs.sink.clone(),
    };
    let stages = runtime.block_on(crate::stages::build(
        &args.plugins,
        None,
        Mode::Replay,
        &ctx,
    ))?;
    let pipeline = crate::stages::pipeline(stages.all, outputs.sink.clone(), &args.plugins);
    let report = Arc::new(Mutex::new(Report::default()));
    let replay = Replay {
        source,
        targets,
        selection,
        speed: args.speed,
        timeout: args.timeout,
        decode,
    };
    let result = runtime.block_on(async {
        outputs.serve_metrics(&pipeline)?;
        outputs.serve_web(&pipeline, &stages.lua)?;
        let progress = std::io::stderr().is_terminal().then(|| progress(&report));
        let mut shutdown = Shutdown::install(None);
        let result = tokio::select! {
            r = tapline_replay::run(replay, pipeline.clone(), report.clone()) => r.map(|()| false),
            // What was compared so far is still reported.
            _ = shutdown.wait() => Ok(true),
        };
        if let Some((bar, ticker)) = progress {
            ticker.abort();
            bar.finish_and_clear();
        }
        pipeline.stop().await;
        result
    });
    let interrupted = match result {
        Ok(interrupted) => interrupted,
        Err(e) => {
            // The error is the one line to read: no end-of-run stats before it.
            outputs.sink.flush();
            return match e.downcast_ref::<SourceError>() {
                Some(SourceError::Input { .. }) => Err(e.context(UsageError("replay".into()))),
                _ => Err(e.context("replay")),
            };
        }
    };
    outputs.finish(&pipeline);
    let report = report.lock();
    let summary = report.summary();
    if args.output.json {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
    }
    if interrupted {
        anyhow::bail!("replay: interrupted after {} exchanges", report.total());
    }
    if outputs.source_ended() {
        eprintln!("tapline: the replay ended; the web view stays up until Ctrl-C");
        runtime.block_on(Shutdown::install(None).wait());
    }
    if args.fail_on_diff && report.differences() > 0 {
        anyhow::bail!(
            "replay: {} of {} exchanges differ or failed (--fail-on-diff)",
            report.differences(),
            report.total()
        );
    }
    Ok(())
}

/// The `--to` targets, with `--via`, `--host`, TLS trust and PostgreSQL's login.
fn targets(args: &ReplayArgs) -> anyhow::Result<Targets> {
    let mut targets = Targets {
        host: args.host.clone(),
        ..Targets::default()
    };
    let mut needs_tls = false;
    for given in &args.to {
        let target = match parse_target(given) {
            Ok(t) => t,
            Err(e) => usage!("{e}"),
        };
        match target.proto {
            Proto::Http | Proto::Https if targets.http.is_some() => {
                usage!("--to {given}: only one http= or https= target")
            }
            Proto::Http | Proto::Https => {
                needs_tls |= target.proto == Proto::Https;
                targets.http = Some(target);
            }
            Proto::Postgres if targets.postgres.is_some() => {
                usage!("--to {given}: only one postgres= target")
            }
            Proto::Postgres => {
                needs_tls |= args.pg_sslmode != PgSslMode::Disable;
                targets.postgres = Some((target, pg_options(args)?));
            }
        }
    }
    if let Some(via) = &args.via {
        let Some(addr) = via.strip_prefix("http://").map(|a| a.trim_end_matches('/')) else {
            usage!("--via {via}: expected http://HOST:PORT (a forward proxy)");
        };
        let Some((host, port)) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        else {
            usage!("--via {via}: expected http://HOST:PORT (a forward proxy)");
        };
        if targets
            .http
            .as_ref()
            .is_some_and(|t| t.proto == Proto::Https)
        {
            usage!("--via works with an http= target, not https=");
        }
        targets.via = Some((host, port));
    }
    if needs_tls {
        let trust = if args.upstream_insecure {
            UpstreamTrust::Insecure
        } else {
            UpstreamTrust::Roots(args.upstream_ca.clone())
        };
        match tapline_tls::client_config(&trust, Vec::new()) {
            Ok(config) => targets.tls = Some(config),
            Err(e) => usage!("{e}"),
        }
    }
    Ok(targets)
}

/// PostgreSQL's user, database, password and SSL mode.
fn pg_options(args: &ReplayArgs) -> anyhow::Result<PgOptions> {
    let Some(user) = args.pg_user.clone() else {
        usage!("--to postgres=… needs --pg-user (or PGUSER)");
    };
    let password = match &args.pg_password_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.lines().next().unwrap_or_default().to_string()),
            Err(e) => usage!("--pg-password-file {}: {e}", path.display()),
        },
        None => std::env::var("PGPASSWORD").ok(),
    };
    Ok(PgOptions {
        database: args.pg_database.clone().unwrap_or_else(|| user.clone()),
        user,
        password,
        sslmode: match args.pg_sslmode {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            PgSslMode::Require => SslMode::Require,
        },
    })
}

/// `--limit`, `--filter-path`, `--filter-sql`.
fn selection(args: &ReplayArgs) -> anyhow::Result<Selection> {
    let regex = |flag: &str, re: &Option<String>| -> anyhow::Result<Option<Regex>> {
        match re.as_deref().map(Regex::new) {
            None => Ok(None),
            Some(Ok(re)) => Ok(Some(re)),
            Some(Err(e)) => usage!("{flag}: {e}"),
        }
    };
    if args.limit == Some(0) {
        usage!("--limit must be at least 1");
    }
    Ok(Selection {
        limit: args.limit,
        filter_path: regex("--filter-path", &args.filter_path)?,
        filter_sql: regex("--filter-sql", &args.filter_sql)?,
    })
}

/// A progress line on stderr, updated from the report while the replay runs: the bar and
/// the task that updates it.
fn progress(report: &Arc<Mutex<Report>>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new_spinner();
    let report = report.clone();
    let shown = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let (total, differences) = {
                let r = report.lock();
                (r.total(), r.differences())
            };
            shown.set_message(format!(
                "{total} exchanges replayed, {differences} different or failed"
            ));
            shown.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (bar, ticker)
}
