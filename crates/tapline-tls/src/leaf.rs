//! Leaf certificates, minted per set of names (host names and addresses) and cached for the
//! run: the first connection to a host signs one (well under a millisecond with ECDSA
//! P-256), every later one reuses it. All leaves share one key made at start, so a mint is a
//! signature, never a key generation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::RngCore;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use time::{Duration, OffsetDateTime};

use crate::authority::Authority;

/// Most leaves kept; past it the cache starts over (a run that meets this many hosts pays
/// one more signature per host).
const MAX_CACHED: usize = 4096;
/// Leaves are valid from a day before they were made (clocks differ) ...
const BACKDATE: Duration = Duration::days(1);
/// ... to this long after: 366 days in all, under the 398 browsers accept.
const LIFETIME: Duration = Duration::days(365);

/// Why a leaf could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot make a certificate for {names}: {reason}")]
pub struct MintError {
    /// The names asked for.
    pub names: String,
    /// What went wrong.
    pub reason: String,
}

/// How the cache did, for the run's summary and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeafStats {
    /// Leaves signed.
    pub minted: u64,
    /// Handshakes served from the cache.
    pub hits: u64,
}

/// Mints and caches leaves signed by the CA.
pub(crate) struct Leaves {
    key: KeyPair,
    signing: Arc<dyn SigningKey>,
    cache: Mutex<HashMap<Vec<String>, Arc<CertifiedKey>>>,
    minted: AtomicU64,
    hits: AtomicU64,
}

impl Leaves {
    /// A cache whose leaves carry one new key, loaded for `provider`.
    pub(crate) fn new(provider: &CryptoProvider) -> Result<Leaves, MintError> {
        let err = |reason: String| MintError {
            names: "leaves".into(),
            reason,
        };
        let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| err(e.to_string()))?;
        Ok(Leaves {
            key,
            signing,
            cache: Mutex::new(HashMap::new()),
            minted: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// The leaf for `names` (host names or addresses; the first is its common name), from
    /// the cache or signed now by `ca`.
    pub(crate) fn get(
        &self,
        ca: &Authority,
        names: &[&str],
    ) -> Result<Arc<CertifiedKey>, MintError> {
        let key = normalize(names);
        if key.is_empty() {
            return Err(MintError {
                names: names.join(","),
                reason: "no host name or address".into(),
            });
        }
        // Held while signing: connections racing to the same new host wait for one mint
        // instead of each making their own.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leaf) = cache.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(leaf.clone());
        }
        let leaf = Arc::new(self.mint(ca, &key)?);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, leaf.clone());
        self.minted.fetch_add(1, Ordering::Relaxed);
        Ok(leaf)
    }

    /// Leaves signed and cache hits so far.
    pub(crate) fn stats(&self) -> LeafStats {
        LeafStats {
            minted: self.minted.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    fn mint(&self, ca: &Authority, names: &[String]) -> Result<CertifiedKey, MintError> {
        let err = |reason: String| MintError {
            names: names.join(","),
            reason,
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| err(format!("{n}: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, "tapline");
        subject.push(
            DnType::CommonName,
            names[0].chars().take(64).collect::<String>(),
        );
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&self.key, ca.issuer())
            .map_err(|e| err(e.to_string()))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone()],
            self.signing.clone(),
        ))
    }
}

/// Names as one cache key: host names lower case without a trailing dot, addresses in their
/// canonical text, in order of first appearance, each once.
fn normalize(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        let name = match bare.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
        };
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_key_whatever_their_spelling() {
        assert_eq!(
            normalize(&["Example.COM.", "example.com", "[::1]", "127.0.0.1"]),
            vec!["example.com", "::1", "127.0.0.1"]
        );
        assert!(normalize(&["", "[]"]).is_empty());
    }

    #[test]
    fn a_host_is_minted_once_then_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let leaves = Leaves::new(&provider).unwrap();
        let a = leaves.get(&ca, &["api.test"]).unwrap();
        let b = leaves.get(&ca, &["API.test"]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        leaves.get(&ca, &["127.0.0.1"]).unwrap();
        assert_eq!(leaves.stats(), LeafStats { minted: 2, hits: 1 });
        assert!(leaves.get(&ca, &[""]).is_err());
        assert!(leaves.get(&ca, &["bad\u{e9}name"]).is_err());
    }
}
