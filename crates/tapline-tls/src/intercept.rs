//! The TLS settings of an interception: the leaf a client is shown (minted for the names it
//! reached tapline by, cached), the protocols agreed with it, and how the upstream leg is
//! verified. Connections get their settings here, cloned from two templates made at start,
//! so sessions (resumption) and key logging are shared by all.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, CommonState, ServerConfig};
use tapline_core::TlsLeg;

use crate::authority::Authority;
use crate::keylog::KeyLogWriter;
use crate::leaf::{LeafStats, Leaves, MintError};
use crate::trust::{verifier, TrustError, UpstreamTrust};

/// Why interception could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The upstream roots.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The leaves' key, or rustls refusing the settings.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Everything connections need to intercept TLS.
pub struct Interceptor {
    ca: Authority,
    leaves: Leaves,
    server_template: ServerConfig,
    client_template: ClientConfig,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Interception with `ca`, upstream certificates checked as `trust` says, secrets logged
    /// to `keylog` when given.
    pub fn new(
        ca: Authority,
        trust: &UpstreamTrust,
        keylog: Option<Arc<KeyLogWriter>>,
    ) -> Result<Interceptor, SetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let leaves = Leaves::new(&provider).map_err(|e| SetupError::Tls(e.to_string()))?;
        let tls = |e: rustls::Error| SetupError::Tls(e.to_string());
        let mut server_template = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate));
        let mut client_template = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier(trust, &provider)?)
            .with_no_client_auth();
        if let Some(log) = keylog {
            server_template.key_log = log.clone();
            client_template.key_log = log;
        }
        Ok(Interceptor {
            ca,
            leaves,
            server_template,
            client_template,
        })
    }

    /// The CA leaves are signed by.
    pub fn authority(&self) -> &Authority {
        &self.ca
    }

    /// The settings for a client's leg: a leaf for `names` (the first is its common name;
    /// SNI first when the client sent one), and `alpn` agreed when the client offered it.
    pub fn acceptor(
        &self,
        names: &[&str],
        alpn: Option<&[u8]>,
    ) -> Result<Arc<ServerConfig>, MintError> {
        let leaf = self.leaves.get(&self.ca, names)?;
        let mut config = self.server_template.clone();
        config.cert_resolver = Arc::new(SingleCertAndKey::from(leaf));
        config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
        Ok(Arc::new(config))
    }

    /// The settings for an upstream leg offering `alpn` (in order).
    pub fn connector(&self, alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
        let mut config = self.client_template.clone();
        config.alpn_protocols = alpn;
        Arc::new(config)
    }

    /// How the leaf cache did so far.
    pub fn leaf_stats(&self) -> LeafStats {
        self.leaves.stats()
    }
}

/// The template's resolver, replaced on every connection before use.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// The name an upstream is verified against and (for host names) asked for by SNI: `sni`
/// when given, else `host` (a name or an address). `None` when neither is usable.
pub fn server_name(sni: Option<&str>, host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    sni.into_iter()
        .chain(std::iter::once(host))
        .find_map(|n| ServerName::try_from(n.to_string()).ok())
}

/// What a connection negotiated, once its handshake is done.
pub fn leg(conn: &CommonState) -> TlsLeg {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or_default()
        .to_string();
    TlsLeg {
        version,
        cipher,
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}
