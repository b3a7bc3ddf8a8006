//! The TLS flags of `tapline proxy` and the `tapline ca` command.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// TLS interception (off unless `--intercept-tls` or `--intercept-hosts`).
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// Intercept TLS: CONNECT tunnels and https/psql mappings are decrypted, with
    /// certificates from tapline's CA (`tapline ca` shows how to trust it).
    #[arg(long)]
    pub intercept_tls: bool,
    /// Intercept only these hosts (comma-separated globs, optional :PORT: `*.example.com`,
    /// `localhost:8443`); implies interception for them.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN,…")]
    pub intercept_hosts: Vec<String>,
    /// Never intercept these hosts (clients that pin certificates); relayed untouched.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN,…")]
    pub ignore_hosts: Vec<String>,
    /// The CA's directory (made on first use; default ~/.tapline/).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Also trust upstream certificates issued by the CAs in this PEM file (repeatable).
    #[arg(long, value_name = "FILE", conflicts_with = "upstream_insecure")]
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify upstream certificates (warned at start).
    #[arg(long)]
    pub upstream_insecure: bool,
    /// TLS on the upstream leg of intercepted psql mappings.
    #[arg(long, value_enum, default_value_t = UpstreamTls::Prefer)]
    pub upstream_tls: UpstreamTls,
    /// Answer PostgreSQL SSLRequest with N on psql mappings that are not intercepted, so
    /// clients continue in cleartext (and get decoded).
    #[arg(long)]
    pub pg_refuse_ssl: bool,
    /// Append NSS key-log lines for both legs of intercepted connections to FILE (for
    /// Wireshark).
    #[arg(long, value_name = "FILE", env = "SSLKEYLOGFILE")]
    pub tls_keylog: Option<PathBuf>,
}

/// `--upstream-tls`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum UpstreamTls {
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS, or the client gets an error.
    Require,
    /// Cleartext.
    Never,
}

/// `tapline ca`
#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA's directory (made on first use; default ~/.tapline/).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Print the CA certificate (PEM) and nothing else.
    #[arg(long)]
    pub pem: bool,
}
