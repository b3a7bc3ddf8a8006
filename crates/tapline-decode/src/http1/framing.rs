//! Where an HTTP/1 body ends (RFC 9112 §6.3): no body, `Content-Length`, chunked, or until
//! the connection closes. One set of rules; [`Strictness`] decides only what the RFC leaves
//! to the reader: a request with both `Transfer-Encoding` and `Content-Length` (a smuggling
//! vector: refused strictly, read by `Transfer-Encoding` leniently, as the RFC says a server
//! may) and a response whose `Content-Length` is broken (refused strictly, read until close
//! leniently).

use super::head::Fields;
use super::Strictness;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Why a message's framing is unusable, or its body broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// `Content-Length` is not one number, or differs between fields.
    #[error("invalid Content-Length")]
    BadLength,
    /// A request's `Transfer-Encoding` does not end in `chunked`.
    #[error("a request's Transfer-Encoding must end in chunked")]
    UnknownCoding,
    /// A request has both `Transfer-Encoding` and `Content-Length`.
    #[error("both Transfer-Encoding and Content-Length")]
    Ambiguous,
    /// The chunked encoding is malformed.
    #[error("malformed chunked encoding")]
    BadChunk,
    /// The sender closed before the body ended.
    #[error("the connection closed before the body ended")]
    Incomplete,
}

/// A request's framing: chunked, a length, or no body.
pub fn of_request<B: AsRef<[u8]>>(
    fields: &Fields<B>,
    strictness: Strictness,
) -> Result<Framing, FramingError> {
    let coding = transfer_coding(fields);
    if coding.is_some() && strictness == Strictness::Lenient {
        // Transfer-Encoding overrides Content-Length, which is not even read.
        return match coding {
            Some(Coding::Chunked) => Ok(Framing::Chunked),
            _ => Err(FramingError::UnknownCoding),
        };
    }
    match (coding, content_length(fields)?) {
        (Some(_), Some(_)) => Err(FramingError::Ambiguous),
        (Some(Coding::Chunked), None) => Ok(Framing::Chunked),
        (Some(Coding::Other), None) => Err(FramingError::UnknownCoding),
        (None, Some(0) | None) => Ok(Framing::Empty),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// A response's framing, given its status and whether it answers a `HEAD`.
pub fn of_response<B: AsRef<[u8]>>(
    fields: &Fields<B>,
    status: u16,
    head_request: bool,
    strictness: Strictness,
) -> Result<Framing, FramingError> {
    if !has_body(status, head_request) {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding wins over Content-Length; a coding other than chunked last can only
    // end with the connection.
    match transfer_coding(fields) {
        Some(Coding::Chunked) => return Ok(Framing::Chunked),
        Some(Coding::Other) => return Ok(Framing::UntilClose),
        None => {}
    }
    match content_length(fields) {
        Ok(Some(0)) => Ok(Framing::Empty),
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Ok(None) => Ok(Framing::UntilClose),
        Err(_) if strictness == Strictness::Lenient => Ok(Framing::UntilClose),
        Err(e) => Err(e),
    }
}

/// False for responses that never have a body: to a `HEAD`, 1xx, 204 and 304.
pub fn has_body(status: u16, head_request: bool) -> bool {
    !(head_request || status < 200 || status == 204 || status == 304)
}

/// What a `Transfer-Encoding` ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Chunked,
    Other,
}

/// The last coding of the `Transfer-Encoding` fields, when there are any.
fn transfer_coding<B: AsRef<[u8]>>(fields: &Fields<B>) -> Option<Coding> {
    let mut last = None;
    for value in fields.get_all(b"transfer-encoding") {
        last.get_or_insert(Coding::Other);
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() {
                last = Some(if coding.eq_ignore_ascii_case(b"chunked") {
                    Coding::Chunked
                } else {
                    Coding::Other
                });
            }
        }
    }
    last
}

/// The one `Content-Length` value (repeats of the same value allowed, as in `3, 3`).
fn content_length<B: AsRef<[u8]>>(fields: &Fields<B>) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for value in fields.get_all(b"content-length") {
        for part in value.split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or(FramingError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::super::head::{RequestHead, ResponseHead};
    use super::*;

    fn request(fields: &str, s: Strictness) -> Result<Framing, FramingError> {
        let wire = format!("POST / HTTP/1.1\r\n{fields}\r\n");
        let head = RequestHead::parse(wire.as_bytes(), Strictness::Strict)
            .unwrap()
            .unwrap();
        of_request(head.fields(), s)
    }

    fn response(status: u16, fields: &str, head_request: bool, s: Strictness) -> Framing {
        let wire = format!("HTTP/1.1 {status} X\r\n{fields}\r\n");
        let head = ResponseHead::parse(wire.as_bytes(), Strictness::Strict)
            .unwrap()
            .unwrap();
        head.framing(head_request, s).unwrap()
    }

    #[test]
    fn request_rules() {
        use Strictness::*;
        assert_eq!(request("", Strict), Ok(Framing::Empty));
        assert_eq!(request("Content-Length: 0\r\n", Strict), Ok(Framing::Empty));
        assert_eq!(
            request("Content-Length: 3, 3\r\n", Strict),
            Ok(Framing::Length(3))
        );
        for s in [Strict, Lenient] {
            assert_eq!(
                request("Content-Length: 3, 4\r\n", s),
                Err(FramingError::BadLength)
            );
            assert_eq!(
                request("Content-Length: 99999999999999999999999\r\n", s),
                Err(FramingError::BadLength)
            );
            assert_eq!(
                request("Transfer-Encoding: gzip, chunked\r\n", s),
                Ok(Framing::Chunked)
            );
            assert_eq!(
                request("Transfer-Encoding: chunked, gzip\r\n", s),
                Err(FramingError::UnknownCoding)
            );
        }
        let both = "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n";
        assert_eq!(request(both, Strict), Err(FramingError::Ambiguous));
        assert_eq!(request(both, Lenient), Ok(Framing::Chunked));
    }

    #[test]
    fn response_rules() {
        use Strictness::*;
        let cl = "Content-Length: 10\r\n";
        for s in [Strict, Lenient] {
            assert_eq!(response(200, cl, true, s), Framing::Empty);
            assert_eq!(response(304, cl, false, s), Framing::Empty);
            assert_eq!(response(204, "", false, s), Framing::Empty);
            assert_eq!(response(100, "", false, s), Framing::Empty);
            assert_eq!(response(200, cl, false, s), Framing::Length(10));
            assert_eq!(
                response(200, "Transfer-Encoding: gzip, chunked\r\n", false, s),
                Framing::Chunked
            );
            assert_eq!(
                response(
                    200,
                    "Transfer-Encoding: gzip\r\nContent-Length: 4\r\n",
                    false,
                    s
                ),
                Framing::UntilClose,
                "a coding other than chunked last reads until close, the length ignored"
            );
            assert_eq!(response(200, "", false, s), Framing::UntilClose);
        }
        assert_eq!(
            response(200, "Content-Length: x\r\n", false, Lenient),
            Framing::UntilClose
        );
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n";
        let head = ResponseHead::parse(wire, Strict).unwrap().unwrap();
        assert_eq!(head.framing(false, Strict), Err(FramingError::BadLength));
    }
}
