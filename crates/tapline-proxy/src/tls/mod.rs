//! TLS interception in the proxy: which connections are intercepted and how (`TlsOptions`),
//! the handshakes of both legs (`handshake`), and serving intercepted connections that
//! arrive through a CONNECT tunnel or an `https` mapping (`intercept`): HTTP through the
//! same exchange as cleartext, anything else through the relay, decrypted. PostgreSQL's SSL
//! negotiation lives with the `psql` mappings (`crate::postgres`).

pub(crate) mod handshake;
pub(crate) mod intercept;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tapline_tls::{InterceptPolicy, Interceptor};

/// How the upstream leg of an intercepted `psql` mapping is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamTlsMode {
    /// TLS when the server offers it, else cleartext.
    #[default]
    Prefer,
    /// TLS, or the client gets an error.
    Require,
    /// Always cleartext.
    Never,
}

/// What the proxy does with TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The CA and settings to intercept with; `None` relays all TLS untouched.
    pub interceptor: Option<Arc<Interceptor>>,
    /// Which hosts are intercepted.
    pub policy: InterceptPolicy,
    /// The upstream leg of intercepted `psql` mappings.
    pub upstream_tls: UpstreamTlsMode,
    /// Answer PostgreSQL's `SSLRequest` with `N` on mappings that are not intercepted.
    pub pg_refuse_ssl: bool,
}

impl TlsOptions {
    /// The interceptor, when connections known by `names` on `port` are intercepted.
    pub(crate) fn intercepting<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
        port: u16,
    ) -> Option<&Arc<Interceptor>> {
        self.interceptor
            .as_ref()
            .filter(|_| self.policy.intercepts(names, port))
    }
}

/// Handshakes so far, for the run's summary.
#[derive(Debug, Default)]
pub struct TlsCounters {
    intercepted: AtomicU64,
    client_failed: AtomicU64,
    upstream_failed: AtomicU64,
    relayed: AtomicU64,
}

/// A snapshot of [`TlsCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsTotals {
    /// Client handshakes tapline completed (connections decrypted).
    pub intercepted: u64,
    /// Client handshakes that failed (a client that does not trust the CA, garbage).
    pub client_failed: u64,
    /// Upstream handshakes that failed (untrusted or broken upstreams).
    pub upstream_failed: u64,
    /// TLS connections relayed untouched (not intercepted).
    pub relayed: u64,
}

impl TlsCounters {
    pub(crate) fn intercepted(&self) {
        self.intercepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn client_failed(&self) {
        self.client_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upstream_failed(&self) {
        self.upstream_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn totals(&self) -> TlsTotals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TlsTotals {
            intercepted: get(&self.intercepted),
            client_failed: get(&self.client_failed),
            upstream_failed: get(&self.upstream_failed),
            relayed: get(&self.relayed),
        }
    }
}
