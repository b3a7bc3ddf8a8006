//! What a flow's TLS looked like: the name the client asked for and, for each leg tapline
//! terminated, what was negotiated on it. A flow whose TLS tapline relayed untouched has
//! the name (read from the client's hello) and no legs.

use serde::Serialize;

/// A flow's TLS, as flow events and plugins see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// The server name the client sent (SNI), if any (clients send none for addresses).
    pub sni: Option<String>,
    /// The client ↔ tapline leg, when tapline terminated the client's TLS (intercepted).
    pub client: Option<TlsLeg>,
    /// The tapline ↔ upstream leg, when tapline spoke TLS to the upstream itself.
    pub server: Option<TlsLeg>,
}

impl TlsInfo {
    /// True when tapline decrypted the flow (it terminated the client's TLS).
    pub fn intercepted(&self) -> bool {
        self.client.is_some()
    }
}

/// What one TLS connection negotiated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsLeg {
    /// The protocol version, `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The cipher suite's IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The application protocol agreed through ALPN (`http/1.1`, `postgresql`), if any.
    pub alpn: Option<String>,
}
