//! `tapline proxy`: checks the flags, builds outputs and the pipeline, binds every listener
//! (so configuration and bind errors come before anything is served), then serves until a
//! signal or `--duration`, and stops cleanly.

use std::time::Duration;

use tapline_core::{Mode, StageContext};
use tapline_decode::DecodeConfig;
use tapline_proxy::{Limits, MappingSpec, Proxy, ProxyConfig};

use crate::cli::ProxyArgs;
use crate::exit::usage;
use crate::shutdown::Shutdown;
use crate::tls_setup;

/// Smallest `--max-header-size` accepted: a request line and a few fields.
const MIN_HEADER_SIZE: usize = 1024;
/// Largest `--max-header-size` accepted.
const MAX_HEADER_SIZE: usize = 16 << 20;

/// Runs the proxy until a signal or `--duration`.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let mappings = parse_mappings(&args.mappings)?;
    if args.disable_http_proxy && mappings.is_empty() {
        usage!("--disable-http-proxy leaves nothing to serve: add a --proxy LISTEN=SCHEME://HOST:PORT mapping");
    }
    let tls = tls_setup::options(&args.tls)?;
    let mut config = ProxyConfig {
        tls: tls.clone(),
        forward: (!args.disable_http_proxy).then_some(args.proxy_address),
        mappings,
        limits: limits(&args)?,
        decode: match DecodeConfig::from_args(args.plugins.body_limit, &args.plugins.decode) {
            Ok(d) => d,
            Err(e) => usage!("--decode: {e}"),
        },
    };
    let outputs = crate::outputs::build(&args.output, Mode::Proxy, args.write.as_deref())?;
    let ctx = StageContext {
        sink: outputs.sink.clone(),
    };
    let stages = crate::stages::build(
        &args.plugins,
        Some((&args.faults, args.duration)),
        Mode::Proxy,
        &ctx,
    )
    .await?;
    let pipeline = crate::stages::pipeline(stages.all, outputs.sink.clone(), &args.plugins);
    config.decode = config.decode.for_pipeline(&pipeline);
    // Two descriptors per proxied connection (six while splicing): the distribution's 1024
    // is not enough, and the connection limit must stay within what there is.
    if let Some(open_files) = tapline_proxy::raise_open_files_limit() {
        let wanted = config.limits.max_connections;
        let fits = tapline_proxy::connections_within(open_files, wanted);
        if fits < wanted {
            tracing::warn!(
                "--max-connections {wanted} lowered to {fits}: the open files limit ({open_files}) \
                 carries no more (raise it with ulimit -Hn)"
            );
            config.limits.max_connections = fits;
        }
    }
    let proxy = match Proxy::bind(config, pipeline.clone()).await {
        Ok(proxy) => proxy,
        Err(e) if e.is_config() => usage!("{e}"),
        Err(e) => return Err(e.into()),
    };
    outputs.serve_metrics(&pipeline)?;
    outputs.serve_web(&pipeline, &stages.lua)?;
    let mut shutdown = Shutdown::install(args.duration);
    let reloader = crate::stages::reloader(stages.lua, &args.plugins);
    for listener in proxy.listeners() {
        eprintln!("tapline: {listener}");
    }
    let handshakes = proxy.tls_counters();
    proxy.run(async move { shutdown.wait().await }).await;
    drop(reloader);
    pipeline.stop().await;
    outputs.finish(&pipeline);
    tls_setup::summary(&tls, &handshakes.totals());
    Ok(())
}

/// Every `--proxy` spec, or a usage error naming the first bad one.
fn parse_mappings(specs: &[String]) -> anyhow::Result<Vec<MappingSpec>> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        match spec.parse::<MappingSpec>() {
            Ok(m) => out.push(m),
            Err(e) => usage!("bad --proxy mapping '{spec}': {e}"),
        }
    }
    Ok(out)
}

/// The connection bounds, checked.
fn limits(args: &ProxyArgs) -> anyhow::Result<Limits> {
    if args.max_connections == 0 {
        usage!("--max-connections must be at least 1");
    }
    if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&args.max_header_size) {
        usage!(
            "--max-header-size {} is out of range ({MIN_HEADER_SIZE}..={MAX_HEADER_SIZE} bytes)",
            args.max_header_size
        );
    }
    for (flag, value) in [
        ("--idle-timeout", args.idle_timeout),
        ("--connect-timeout", args.connect_timeout),
    ] {
        if value < Duration::from_millis(1) {
            usage!("{flag} must be at least 1ms");
        }
    }
    let Ok(body_limit) = usize::try_from(args.plugins.body_limit) else {
        usage!("--body-limit {} is too large", args.plugins.body_limit);
    };
    Ok(Limits {
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        max_header_size: args.max_header_size,
        body_limit,
    })
}
