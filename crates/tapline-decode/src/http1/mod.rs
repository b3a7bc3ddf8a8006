//! HTTP/1.x, once, for every part of tapline that reads or writes it: the proxy's relay, the
//! passive decoder, the pcap export and the metrics endpoint. Sans-I/O and never panicking.
//!
//! - [`head`]: request and response heads parsed in place (httparse) into views over their
//!   bytes that keep every field's case, order and duplicates;
//! - [`framing`]: where a body ends (RFC 9112 §6), one set of rules with a [`Strictness`]:
//!   the proxy refuses what is ambiguous, the passive decoder reads on as a server would;
//! - [`body`]: one body reader (length, chunked with its trailers, until close), fed in
//!   pieces of any size;
//! - [`write`]: one head writer (start lines, fields without the hop-by-hop ones of
//!   [`hop_by_hop`], framing fields, whole responses).

pub mod body;
pub mod framing;
pub mod head;
pub mod hop_by_hop;
pub mod write;

pub use body::BodyReader;
pub use framing::{Framing, FramingError};
pub use head::{Fields, HeadError, RequestHead, ResponseHead, MAX_FIELDS};

/// How much a reader forgives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// The proxy: anything a peer could read two ways (a request with both
    /// `Transfer-Encoding` and `Content-Length`, a response with a broken length) is refused,
    /// and heads must follow RFC 9112 to the letter.
    Strict,
    /// The passive decoder: what real servers accept is read as they would read it (extra
    /// spaces, obsolete line folding, invalid response fields skipped), and what cannot be read
    /// is left for the decoder to resynchronise past.
    Lenient,
}

/// `HTTP/1.0` or `HTTP/1.1`, from the `x` of `HTTP/1.x`.
pub fn version_text(minor: u8) -> &'static str {
    if minor == 0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}
