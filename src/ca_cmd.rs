//! `tapline ca`: makes tapline's CA on first use and says where its certificate is and how
//! each kind of client is made to trust it; `--pem` prints the certificate alone.

use std::path::{Path, PathBuf};

use tapline_tls::Authority;

use crate::cli::CaArgs;
use crate::exit::usage;

/// Runs `tapline ca`.
pub fn run(args: CaArgs) -> anyhow::Result<()> {
    let ca = load(args.ca_dir.as_deref())?;
    if args.pem {
        print!("{}", ca.cert_pem());
        return Ok(());
    }
    let cert = ca.cert_path();
    let made = if ca.created() { "made now" } else { "existing" };
    println!("tapline CA ({made}): {}", cert.display());
    println!(
        "  key: {} (mode 0600; keep it private)",
        ca.dir().join(tapline_tls::authority::KEY_FILE).display()
    );
    println!();
    print!("{}", trust_instructions(&cert));
    Ok(())
}

/// The CA in `dir` (default `~/.tapline/`), made if absent; errors are usage errors (exit 2)
/// naming the directory or file.
pub fn load(dir: Option<&Path>) -> anyhow::Result<Authority> {
    let dir: PathBuf = match dir {
        Some(d) => d.to_path_buf(),
        None => match Authority::default_dir() {
            Ok(d) => d,
            Err(e) => usage!("{e}"),
        },
    };
    match Authority::load_or_create(&dir) {
        Ok(ca) => Ok(ca),
        Err(e) => usage!("{e}"),
    }
}

/// How to make the usual clients trust the certificate at `cert`.
fn trust_instructions(cert: &Path) -> String {
    let c = cert.display();
    format!(
        "Trust it in the client (only where you intercept; anyone with the key can read that traffic):
  curl          curl --cacert {c} -x http://127.0.0.1:3180 https://example.com/
  Debian/Ubuntu cp {c} /usr/local/share/ca-certificates/tapline-ca.crt && update-ca-certificates
  Python        REQUESTS_CA_BUNDLE={c} (requests)   SSL_CERT_FILE={c} (ssl, httpx, urllib)
  Node.js       NODE_EXTRA_CA_CERTS={c}
  Chromium      certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n tapline -i {c}
  Firefox       certutil -d sql:<profile dir> -A -t C,, -n tapline -i {c}
  psql/libpq    psql \"host=… port=… sslmode=verify-full sslrootcert={c}\"
  Java          keytool -importcert -cacerts -alias tapline -file {c}
Then: tapline proxy --intercept-tls (--ignore-hosts for clients that pin certificates).
"
    )
}
