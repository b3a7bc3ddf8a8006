//! How a PostgreSQL client opens a connection: with an `SSLRequest` (8 bytes: length 8,
//! code 80877103) before any TLS, a `GSSENCRequest` (code 80877104), a TLS hello straight
//! away (PostgreSQL 17's direct SSL, `sslnegotiation=direct`), or in cleartext (a startup
//! or cancel message).

use crate::hello::HANDSHAKE_RECORD;

/// The `SSLRequest` code.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The `GSSENCRequest` code.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The `SSLRequest` message as a client sends it.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// What a PostgreSQL client's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStart {
    /// Too few bytes to say.
    NeedMore,
    /// `SSLRequest`: the client asks to switch to TLS (8 bytes to consume).
    SslRequest,
    /// `GSSENCRequest`: the client asks for GSSAPI encryption (8 bytes to consume).
    GssEncRequest,
    /// A TLS hello without a request first (direct SSL).
    DirectTls,
    /// Anything else: a cleartext startup, a cancel request, or garbage for the server.
    Cleartext,
}

/// Classifies a client's first bytes (decided on at most 8).
pub fn classify(first: &[u8]) -> PgStart {
    match first.first() {
        None => return PgStart::NeedMore,
        Some(&HANDSHAKE_RECORD) => return PgStart::DirectTls,
        Some(_) => {}
    }
    // Both requests are exactly 8 bytes long: a prefix of another length is cleartext.
    let length_prefix = [0u8, 0, 0, 8];
    let known = first.len().min(4);
    if first[..known] != length_prefix[..known] {
        return PgStart::Cleartext;
    }
    let Some(code) = first.get(4..8) else {
        return PgStart::NeedMore;
    };
    match u32::from_be_bytes([code[0], code[1], code[2], code[3]]) {
        SSL_REQUEST_CODE => PgStart::SslRequest,
        GSSENC_REQUEST_CODE => PgStart::GssEncRequest,
        _ => PgStart::Cleartext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_to_start_is_told_apart() {
        assert_eq!(classify(&SSL_REQUEST), PgStart::SslRequest);
        assert_eq!(classify(&SSL_REQUEST[..5]), PgStart::NeedMore);
        assert_eq!(
            classify(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x30]),
            PgStart::GssEncRequest
        );
        assert_eq!(classify(&[0x16, 3, 1]), PgStart::DirectTls);
        assert_eq!(classify(&[0, 0, 0, 0x29, 0, 3, 0, 0]), PgStart::Cleartext);
        assert_eq!(
            classify(&[0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e]),
            PgStart::Cleartext
        );
        assert_eq!(classify(&[0, 0]), PgStart::NeedMore);
        assert_eq!(classify(b"Q"), PgStart::Cleartext);
        assert_eq!(classify(&[]), PgStart::NeedMore);
    }
}
