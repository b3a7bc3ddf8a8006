//! tapline's own certificate authority: two PEM files in one directory, made on first use
//! and read back on every later one. The certificate is what users trust (once per client
//! or system); the key never leaves the directory (mode 0600).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// The CA certificate's file name in the CA directory.
pub const CERT_FILE: &str = "tapline-ca.pem";
/// The CA key's file name in the CA directory.
pub const KEY_FILE: &str = "tapline-ca-key.pem";
/// How long a new CA is valid.
const CA_LIFETIME: Duration = Duration::days(10 * 365);

/// Why the CA could not be made or read. Each names the directory or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// No directory was given and `$HOME` is not set.
    #[error("--ca-dir: no directory given and $HOME is not set")]
    NoHome,
    /// The directory could not be made or read.
    #[error("--ca-dir {dir}: {reason}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A CA file could not be read, written or understood.
    #[error("--ca-dir: {file}: {reason}")]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The CA: its certificate (for users to trust) and the issuer that signs leaves.
pub struct Authority {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    created: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// The CA directory used when none is given: `~/.tapline/`.
    pub fn default_dir() -> Result<PathBuf, CaError> {
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => Ok(Path::new(&home).join(".tapline")),
            _ => Err(CaError::NoHome),
        }
    }

    /// The CA in `dir`: read when both files are there, made (directory included) when
    /// neither is. One file without the other is an error, as are unreadable files, a key
    /// that is not the certificate's, and an expired certificate.
    pub fn load_or_create(dir: &Path) -> Result<Authority, CaError> {
        let cert_file = dir.join(CERT_FILE);
        let key_file = dir.join(KEY_FILE);
        match (cert_file.exists(), key_file.exists()) {
            (true, true) => Authority::load(dir, &cert_file, &key_file),
            (false, false) => Authority::create(dir, &cert_file, &key_file),
            (true, false) => Err(CaError::File {
                file: key_file,
                reason: format!("missing while {CERT_FILE} exists (restore it, or remove {CERT_FILE} to make a new CA)"),
            }),
            (false, true) => Err(CaError::File {
                file: cert_file,
                reason: format!("missing while {KEY_FILE} exists (restore it, or remove {KEY_FILE} to make a new CA)"),
            }),
        }
    }

    /// The directory the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate file users trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// True when this call made the CA (it was not there before).
    pub fn created(&self) -> bool {
        self.created
    }

    /// What signs leaf certificates.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn create(dir: &Path, cert_file: &Path, key_file: &Path) -> Result<Authority, CaError> {
        let dir_err = |reason: String| CaError::Dir {
            dir: dir.to_path_buf(),
            reason,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| dir_err(format!("cannot create it: {e}")))?;
        let key = KeyPair::generate().map_err(|e| dir_err(format!("cannot make a key: {e}")))?;
        let params = ca_params();
        let cert = params
            .self_signed(&key)
            .map_err(|e| dir_err(format!("cannot sign the CA certificate: {e}")))?;
        // The key first, exclusively and private: a CA certificate without its key is useless,
        // and a race with another tapline making the same CA loses cleanly here.
        write_new(key_file, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(cert_file, cert.pem().as_bytes(), 0o644)?;
        Ok(Authority {
            dir: dir.to_path_buf(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            created: true,
        })
    }

    fn load(dir: &Path, cert_file: &Path, key_file: &Path) -> Result<Authority, CaError> {
        let cert_pem = read_text(cert_file)?;
        let key_pem = read_text(key_file)?;
        let cert_err = |reason: String| CaError::File {
            file: cert_file.to_path_buf(),
            reason,
        };
        let key_err = |reason: String| CaError::File {
            file: key_file.to_path_buf(),
            reason,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| cert_err("not a PEM certificate".into()))?;
        let x509 = pem
            .parse_x509()
            .map_err(|e| cert_err(format!("not a readable certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(cert_err("not a CA certificate".into()));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if x509.validity().not_after.timestamp() < now {
            return Err(cert_err(format!(
                "expired on {} (remove both CA files to make a new CA)",
                x509.validity().not_after
            )));
        }
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| key_err(format!("not a readable private key: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(key_err(format!("is not the key of {CERT_FILE}")));
        }
        if let Ok(meta) = fs::metadata(key_file) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{}: other users can read the CA key (chmod 600 it)",
                    key_file.display()
                );
            }
        }
        let cert_der = CertificateDer::from(pem.contents.clone());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| cert_err(format!("cannot sign with it: {e}")))?;
        Ok(Authority {
            dir: dir.to_path_buf(),
            cert_pem,
            issuer,
            created: false,
        })
    }
}

/// A new CA's certificate: a constrained CA (it signs leaves only), named after the host.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    let host = hostname();
    name.push(DnType::OrganizationName, "tapline");
    name.push(
        DnType::CommonName,
        format!("tapline CA ({host})")
            .chars()
            .take(64)
            .collect::<String>(),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(crate::leaf::random_serial());
    params
}

/// This machine's name, for the CA's name (so users tell their CAs apart).
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn read_text(file: &Path) -> Result<String, CaError> {
    fs::read_to_string(file).map_err(|e| CaError::File {
        file: file.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })
}

/// Writes a file that must not exist yet, with `mode`.
fn write_new(file: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |e: std::io::Error| CaError::File {
        file: file.to_path_buf(),
        reason: format!("cannot write it: {e}"),
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(file)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_ca_is_made_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("nested/ca");
        let made = Authority::load_or_create(&ca_dir).unwrap();
        assert!(made.created());
        let key_mode = fs::metadata(ca_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let again = Authority::load_or_create(&ca_dir).unwrap();
        assert!(!again.created());
        assert_eq!(again.cert_pem(), made.cert_pem());
    }

    #[test]
    fn broken_ca_directories_say_which_file_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        Authority::load_or_create(dir.path()).unwrap();
        fs::write(
            dir.path().join(KEY_FILE),
            "-----BEGIN PRIVATE KEY-----\nnope\n",
        )
        .unwrap();
        let e = Authority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(KEY_FILE) && e.contains("not a readable private key"),
            "{e}"
        );

        let other = tempfile::tempdir().unwrap();
        Authority::load_or_create(other.path()).unwrap();
        fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();
        let e = Authority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not the key of"), "{e}");

        fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        let e = Authority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PEM certificate"), "{e}");

        fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let e = Authority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing while"), "{e}");
    }
}
