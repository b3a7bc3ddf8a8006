//! `tapline proxy`'s TLS flags turned into the proxy's [`TlsOptions`]: the interception
//! policy, the CA (made on first use), upstream trust and the key log, each checked at
//! start (exit 2 with the flag named); and the run's TLS summary.

use std::sync::Arc;

use tapline_proxy::{TlsOptions, TlsTotals, UpstreamTlsMode};
use tapline_tls::{HostPattern, InterceptPolicy, Interceptor, KeyLogWriter, UpstreamTrust};

use crate::cli::{TlsArgs, UpstreamTls};
use crate::exit::usage;

/// The proxy's TLS options from the flags.
pub fn options(args: &TlsArgs) -> anyhow::Result<TlsOptions> {
    let policy = InterceptPolicy {
        all: args.intercept_tls,
        only: patterns("--intercept-hosts", &args.intercept_hosts)?,
        never: patterns("--ignore-hosts", &args.ignore_hosts)?,
    };
    let upstream_tls = match args.upstream_tls {
        UpstreamTls::Prefer => UpstreamTlsMode::Prefer,
        UpstreamTls::Require => UpstreamTlsMode::Require,
        UpstreamTls::Never => UpstreamTlsMode::Never,
    };
    let mut options = TlsOptions {
        interceptor: None,
        policy,
        upstream_tls,
        pg_refuse_ssl: args.pg_refuse_ssl,
    };
    if !options.policy.enabled() {
        if !args.ignore_hosts.is_empty() || !args.upstream_ca.is_empty() || args.upstream_insecure {
            tracing::warn!("TLS flags without --intercept-tls or --intercept-hosts have no effect");
        }
        return Ok(options);
    }
    let ca = crate::ca_cmd::load(args.ca_dir.as_deref())?;
    if ca.created() {
        eprintln!(
            "tapline: made a CA for TLS interception: trust {} in your clients (`tapline ca` shows how)",
            ca.cert_path().display()
        );
    }
    let trust = if args.upstream_insecure {
        tracing::warn!("--upstream-insecure: upstream certificates are not verified");
        UpstreamTrust::Insecure
    } else {
        UpstreamTrust::Roots(args.upstream_ca.clone())
    };
    let keylog = match &args.tls_keylog {
        None => None,
        Some(path) => match KeyLogWriter::open(path) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => usage!("--tls-keylog {}: {e}", path.display()),
        },
    };
    match Interceptor::new(ca, &trust, keylog) {
        Ok(interceptor) => options.interceptor = Some(Arc::new(interceptor)),
        Err(e) => usage!("{e}"),
    }
    Ok(options)
}

/// Patterns from a flag's comma-separated values.
fn patterns(flag: &str, values: &[String]) -> anyhow::Result<Vec<HostPattern>> {
    let mut out = Vec::new();
    for value in values {
        match HostPattern::parse_list(value) {
            Ok(list) => out.extend(list),
            Err(e) => usage!("{flag} {e}"),
        }
    }
    Ok(out)
}

/// One line on stderr about the run's TLS, when it intercepted.
pub fn summary(options: &TlsOptions, totals: &TlsTotals) {
    let Some(interceptor) = &options.interceptor else {
        return;
    };
    let leaves = interceptor.leaf_stats();
    eprintln!(
        "tapline: TLS: {} connections intercepted, {} relayed untouched, {} client and {} upstream handshakes failed; {} certificates minted, {} reused",
        totals.intercepted,
        totals.relayed,
        totals.client_failed,
        totals.upstream_failed,
        leaves.minted,
        leaves.hits
    );
}
