//! Reading a client's TLS hello before deciding what to do with the connection: the name it
//! asks for and the protocols it offers decide whether tapline intercepts, and the bytes
//! read are kept so that a connection tapline does not intercept is relayed unchanged.
//!
//! The hello is parsed by rustls itself ([`rustls::server::Acceptor`]); what is added here
//! is the bookkeeping of the raw bytes and the bounds.

use rustls::server::{Accepted, Acceptor};

/// The first byte of a TLS handshake record.
pub const HANDSHAKE_RECORD: u8 = 0x16;
/// The most hello bytes read before giving up on a client.
pub const MAX_HELLO: usize = 64 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A hello has begun; more bytes are needed.
    Incomplete,
    /// The bytes are not a TLS handshake record.
    NotTls,
    /// A whole hello.
    Client(ClientHelloInfo),
    /// TLS, but not a hello rustls accepts (or one larger than [`MAX_HELLO`]).
    Invalid(String),
}

/// What a client's hello asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The server name (SNI), if the client sent one.
    pub sni: Option<String>,
    /// The application protocols offered (ALPN), in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHelloInfo {
    /// True when the client offered `protocol` by ALPN.
    pub fn offered(&self, protocol: &[u8]) -> bool {
        self.alpn.iter().any(|p| p == protocol)
    }
}

/// True when `bytes` may begin a TLS handshake record (decided on up to two bytes).
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    match bytes {
        [] => false,
        [first] => *first == HANDSHAKE_RECORD,
        [first, major, ..] => *first == HANDSHAKE_RECORD && *major == 0x03,
    }
}

/// Collects a client's first bytes until its hello is whole.
#[derive(Default)]
pub struct HelloReader {
    acceptor: Acceptor,
    raw: Vec<u8>,
    accepted: Option<Accepted>,
    failed: bool,
}

impl std::fmt::Debug for HelloReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelloReader")
            .field("raw", &self.raw.len())
            .field("accepted", &self.accepted.is_some())
            .finish()
    }
}

impl HelloReader {
    /// A reader that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes from the client and says what they add up to. Once it answered
    /// anything but [`Hello::Incomplete`], more bytes are only kept.
    pub fn feed(&mut self, bytes: &[u8]) -> Hello {
        self.raw.extend_from_slice(bytes);
        if self.failed || self.accepted.is_some() {
            return self.verdict();
        }
        if !looks_like_tls(&self.raw) {
            self.failed = true;
            return Hello::NotTls;
        }
        if self.raw.len() > MAX_HELLO {
            self.failed = true;
            return Hello::Invalid(format!("no whole TLS hello in {MAX_HELLO} bytes"));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.acceptor.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Hello::Invalid(e.to_string());
                }
            }
            match self.acceptor.accept() {
                Ok(None) => {}
                Ok(Some(accepted)) => {
                    self.accepted = Some(accepted);
                    break;
                }
                Err((e, _alert)) => {
                    self.failed = true;
                    return Hello::Invalid(e.to_string());
                }
            }
        }
        self.verdict()
    }

    /// What the bytes so far say.
    fn verdict(&self) -> Hello {
        match &self.accepted {
            Some(accepted) => {
                let hello = accepted.client_hello();
                Hello::Client(ClientHelloInfo {
                    sni: hello.server_name().map(str::to_string),
                    alpn: hello
                        .alpn()
                        .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default(),
                })
            }
            None if self.failed && !looks_like_tls(&self.raw) => Hello::NotTls,
            None if self.failed => Hello::Invalid("not a TLS hello".into()),
            None => Hello::Incomplete,
        }
    }

    /// Every byte fed so far, to relay unchanged when the connection is not intercepted.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The parsed hello, to continue the handshake with (tokio-rustls'
    /// `StartHandshake::from_parts`). Bytes fed after the hello stay with it.
    pub fn into_accepted(self) -> Option<Accepted> {
        self.accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello, as rustls' client writes it.
    fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn a_hello_in_pieces_gives_its_name_and_protocols() {
        let bytes = client_hello("api.test", &[b"h2", b"http/1.1"]);
        let mut reader = HelloReader::new();
        let mut last = Hello::Incomplete;
        for piece in bytes.chunks(7) {
            assert_eq!(last, Hello::Incomplete);
            last = reader.feed(piece);
        }
        let Hello::Client(info) = last else {
            panic!("{last:?}")
        };
        assert_eq!(info.sni.as_deref(), Some("api.test"));
        assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(info.offered(b"http/1.1") && !info.offered(b"postgresql"));
        assert_eq!(reader.raw(), &bytes[..]);
        assert!(reader.into_accepted().is_some());
    }

    #[test]
    fn other_bytes_are_not_tls_and_broken_hellos_are_invalid() {
        assert_eq!(
            HelloReader::new().feed(b"GET / HTTP/1.1\r\n"),
            Hello::NotTls
        );
        assert_eq!(HelloReader::new().feed(&[0x16]), Hello::Incomplete);
        assert_eq!(HelloReader::new().feed(&[0x16, 0x07]), Hello::NotTls);
        let mut bad = vec![0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
        assert!(matches!(HelloReader::new().feed(&bad), Hello::Invalid(_)));
        bad.truncate(4);
        assert_eq!(HelloReader::new().feed(&bad), Hello::Incomplete);
    }
}
