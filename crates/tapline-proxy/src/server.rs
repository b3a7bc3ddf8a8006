//! The listeners: binding (all before serving, so errors come first), accepting within the
//! connection limit, and stopping (drain, grace period, then force).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tapline_core::Pipeline;
use tapline_decode::DecodeConfig;
use tokio::net::TcpListener;

use crate::context::{is_self, Limits, Shared};
use crate::errors::ProxyError;
use crate::fd_limit;
use crate::http::{self, Upstream};
use crate::mapping::{MappingSpec, Scheme};
use crate::stop::{self, Phase, StopControl};
use crate::tls::{TlsCounters, TlsOptions};

/// How long in-flight work may take to finish once a stop was asked for.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long forced connections get to report their end.
const FORCE_GRACE: Duration = Duration::from_secs(1);

/// What to serve.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// The HTTP forward proxy's address, or `None` when disabled.
    pub forward: Option<SocketAddr>,
    /// Mapping proxies.
    pub mappings: Vec<MappingSpec>,
    /// Bounds on every connection.
    pub limits: Limits,
    /// How mapping flows are decoded (body limit, `--decode` overrides).
    pub decode: DecodeConfig,
    /// TLS interception.
    pub tls: TlsOptions,
}

/// One bound listener, as announced on stderr.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// The mapping, for mapping proxies.
    pub mapping: Option<MappingSpec>,
}

impl fmt::Display for ListenerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mapping {
            None => write!(f, "HTTP proxy on {}", self.addr),
            Some(m) => write!(
                f,
                "mapping {} -> {}://{}",
                self.addr,
                m.scheme_name,
                m.authority()
            ),
        }
    }
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    shared: Arc<Shared>,
    control: StopControl,
    listeners: Vec<(TcpListener, ListenerInfo)>,
}

impl Proxy {
    /// Checks the configuration (duplicate addresses, unresolvable or looping mappings),
    /// then binds every listener.
    pub async fn bind(config: ProxyConfig, pipeline: Pipeline) -> Result<Proxy, ProxyError> {
        let mut wanted: Vec<(SocketAddr, Option<MappingSpec>)> = Vec::new();
        if let Some(addr) = config.forward {
            wanted.push((addr, None));
        }
        wanted.extend(config.mappings.iter().map(|m| (m.listen, Some(m.clone()))));
        check_distinct(&wanted)?;
        let configured: Vec<SocketAddr> = wanted.iter().map(|(a, _)| *a).collect();
        for m in &config.mappings {
            for target in resolve_mapping(m).await? {
                if is_self(&configured, target) {
                    return Err(ProxyError::Loop {
                        spec: m.text.clone(),
                        target,
                    });
                }
            }
        }
        let mut listeners = Vec::new();
        for (addr, mapping) in wanted {
            let socket = TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr,
                    what: describe(&mapping),
                    source,
                })?;
            let addr = socket.local_addr().unwrap_or(addr);
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    "{addr} is reachable from other hosts ({})",
                    describe(&mapping)
                );
            }
            listeners.push((socket, ListenerInfo { addr, mapping }));
        }
        let own = listeners.iter().map(|(_, i)| i.addr).collect();
        let (control, signal) = stop::channel();
        Ok(Proxy {
            shared: Arc::new(Shared::new(
                pipeline,
                config.limits,
                config.decode,
                config.tls,
                own,
                signal,
            )),
            control,
            listeners,
        })
    }

    /// The handshake counters, to read once the run is over.
    pub fn tls_counters(&self) -> Arc<TlsCounters> {
        self.shared.tls_counters.clone()
    }

    /// The bound listeners, in configuration order.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners.iter().map(|(_, i)| i.clone()).collect()
    }

    /// Serves until `stop` resolves; then stops accepting, lets in-flight work finish within
    /// [`GRACE`], and ends what is left (flows end as `shutdown`).
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let Proxy {
            shared,
            control,
            listeners,
        } = self;
        let accepting: Vec<_> = listeners
            .into_iter()
            .map(|(socket, info)| tokio::spawn(accept(shared.clone(), socket, info)))
            .collect();
        stop.await;
        control.enter(Phase::Draining);
        for task in accepting {
            let _ = task.await;
        }
        if !all_closed(&shared, GRACE).await {
            tracing::info!("ending connections still open after {GRACE:?}");
        }
        control.enter(Phase::Forced);
        all_closed(&shared, FORCE_GRACE).await;
    }
}

/// Accepts connections while serving, each with a permit of the connection limit.
async fn accept(shared: Arc<Shared>, socket: TcpListener, info: ListenerInfo) {
    let upstream = match &info.mapping {
        Some(m) if m.scheme == Scheme::Http => match Upstream::fixed(&m.host, m.port, false) {
            Some(up) => Some(up),
            None => {
                tracing::warn!("{info}: the upstream is no valid Host value; not serving");
                return;
            }
        },
        Some(_) => None,
        None => Some(Upstream::Forward),
    };
    let mapping = info.mapping.map(Arc::new);
    loop {
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shared.stop.reached(Phase::Draining) => return,
        };
        let (stream, peer) = tokio::select! {
            a = socket.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    fd_limit::accept_failed(&info.addr.to_string(), &e);
                    tokio::time::sleep(fd_limit::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shared.stop.reached(Phase::Draining) => return,
        };
        match (&upstream, &mapping) {
            (Some(up), _) => {
                tokio::spawn(http::serve(
                    shared.clone(),
                    stream,
                    peer,
                    up.clone(),
                    permit,
                ));
            }
            (None, Some(spec)) => {
                tokio::spawn(crate::raw_mapping::serve(
                    shared.clone(),
                    stream,
                    peer,
                    spec.clone(),
                    permit,
                ));
            }
            (None, None) => return,
        }
    }
}

/// Waits until every connection has given its permit back, at most `within`.
async fn all_closed(shared: &Shared, within: Duration) -> bool {
    let all = u32::try_from(shared.limits.max_connections).unwrap_or(u32::MAX);
    matches!(
        tokio::time::timeout(within, shared.permits.acquire_many(all)).await,
        Ok(Ok(_))
    )
}

fn describe(mapping: &Option<MappingSpec>) -> String {
    match mapping {
        None => "--proxy-address".to_string(),
        Some(m) => format!("--proxy '{m}'"),
    }
}

fn check_distinct(wanted: &[(SocketAddr, Option<MappingSpec>)]) -> Result<(), ProxyError> {
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    for (addr, mapping) in wanted {
        if addr.port() == 0 {
            continue;
        }
        if let Some(other) = seen.insert(*addr, describe(mapping)) {
            return Err(ProxyError::DuplicateListen {
                addr: *addr,
                what: describe(mapping),
                other,
            });
        }
    }
    Ok(())
}

async fn resolve_mapping(m: &MappingSpec) -> Result<Vec<SocketAddr>, ProxyError> {
    let err = |reason: String| ProxyError::Resolve {
        spec: m.text.clone(),
        authority: m.authority(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((m.host.as_str(), m.port))
        .await
        .map_err(|e| err(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(err("no address".into()));
    }
    Ok(addrs)
}
