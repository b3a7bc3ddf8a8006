//! tapline's TLS interception, sans I/O: its local CA ([`Authority`]), leaf certificates
//! minted per host and cached, the rustls settings of both legs ([`Interceptor`]), upstream
//! verification ([`UpstreamTrust`]), NSS key logs ([`KeyLogWriter`]), which connections to
//! intercept ([`InterceptPolicy`]), and reading what a client opens with: a TLS hello
//! ([`HelloReader`]) or PostgreSQL's SSL negotiation ([`pg_start`]). The proxy does the I/O
//! (tokio-rustls over these settings).
//!
//! Everything is rustls + rcgen over aws-lc-rs (rustls' default provider, with the
//! post-quantum key exchange browsers offer first): no OpenSSL.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authority;
pub mod hello;
pub mod intercept;
pub mod keylog;
pub mod leaf;
pub mod pg_start;
pub mod policy;
pub mod trust;

pub use authority::{Authority, CaError};
pub use hello::{ClientHelloInfo, Hello, HelloReader};
pub use intercept::{leg, server_name, Interceptor, SetupError};
pub use keylog::KeyLogWriter;
pub use leaf::{LeafStats, MintError};
pub use pg_start::PgStart;
pub use policy::{HostPattern, InterceptPolicy};
/// rustls, as tapline uses it (for the proxy's tokio-rustls streams).
pub use rustls;
pub use trust::{client_config, TrustError, UpstreamTrust};
