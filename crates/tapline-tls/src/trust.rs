//! Which upstream certificates tapline accepts: the system's roots plus the ones given with
//! `--upstream-ca`, or, with `--upstream-insecure`, any (signatures still checked, so the
//! handshake stays a real one; names, dates and issuers are not).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How upstream certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTrust {
    /// Against the system's roots and the certificates in these PEM files (`--upstream-ca`).
    Roots(Vec<PathBuf>),
    /// Not at all (`--upstream-insecure`).
    Insecure,
}

impl Default for UpstreamTrust {
    fn default() -> Self {
        UpstreamTrust::Roots(Vec::new())
    }
}

/// Why the upstream roots could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--upstream-ca {file}: {reason}")]
pub struct TrustError {
    /// The file given.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The settings of a plain TLS client (no interception: `tapline replay`'s connections)
/// verifying servers as `trust` says, offering `alpn` (in order).
pub fn client_config(
    trust: &UpstreamTrust,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError {
            file: "(settings)".into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier(trust, &provider)?)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// The verifier `trust` asks for.
pub(crate) fn verifier(
    trust: &UpstreamTrust,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    let extra: &[PathBuf] = match trust {
        UpstreamTrust::Insecure => {
            return Ok(Arc::new(AnyCertificate {
                provider: provider.clone(),
            }))
        }
        UpstreamTrust::Roots(files) => files,
    };
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!("no system root certificates found ({:?})", native.errors);
    }
    for file in extra {
        add_file(&mut roots, file)?;
    }
    if roots.is_empty() {
        // Nothing to verify against: every upstream would fail with "unknown issuer", which
        // is the honest answer; say why once.
        tracing::warn!(
            "no trusted root certificates (install ca-certificates or give --upstream-ca)"
        );
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
        .map_err(|e| TrustError {
            file: "(roots)".into(),
            reason: e.to_string(),
        })
}

/// Adds every certificate of a PEM file; a file with none, or with one that is no valid
/// certificate, is an error.
fn add_file(roots: &mut RootCertStore, file: &Path) -> Result<(), TrustError> {
    let err = |reason: String| TrustError {
        file: file.display().to_string(),
        reason,
    };
    let data = std::fs::read(file).map_err(|e| err(format!("cannot read it: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| err(format!("not a usable certificate: {e}")))?;
    }
    Ok(())
}

/// Accepts any certificate, checking only that the handshake was signed by its key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_ca_files_must_hold_certificates() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "just words\n").unwrap();
        let trust = UpstreamTrust::Roots(vec![text]);
        let e = verifier(&trust, &provider).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let missing = UpstreamTrust::Roots(vec![dir.path().join("absent.pem")]);
        let e = verifier(&missing, &provider).err().unwrap().to_string();
        assert!(e.contains("cannot read it"), "{e}");
        let ca = crate::Authority::load_or_create(&dir.path().join("ca")).unwrap();
        let good = UpstreamTrust::Roots(vec![ca.cert_path()]);
        assert!(verifier(&good, &provider).is_ok());
    }
}
