//! Where an HTTP/1 body ends (RFC 9112 §6): no body, `Content-Length`, chunked, or until the
//! connection closes. The proxy relays bodies in their framing as received, so this only
//! finds the end (and, for plugins, decodes chunked payloads); it never re-encodes.
//!
//! Written by hand rather than with hyper's body decoder because that decoder is private to
//! hyper's connection types, which the proxy no longer uses (see `forward`). The `Framing`
//! type is the capture decoder's (`tapline-decode`); its chunk reader is not shared because
//! a passive decoder must get past capture gaps and resync, where a proxy must refuse
//! malformed framing outright.

pub(crate) use tapline_decode::http::Framing;

use crate::head::Fields;

/// Why a message's framing is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    /// `Content-Length` is not one number, or differs between fields.
    #[error("invalid Content-Length")]
    BadLength,
    /// A request's `Transfer-Encoding` does not end in `chunked`.
    #[error("a request's Transfer-Encoding must end in chunked")]
    UnknownCoding,
    /// A request has both `Transfer-Encoding` and `Content-Length` (a smuggling vector).
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
pub(crate) fn of_request(fields: &Fields) -> Result<Framing, FramingError> {
    match (transfer_coding(fields), content_length(fields)?) {
        (Some(_), Some(_)) => Err(FramingError::Ambiguous),
        (Some(true), None) => Ok(Framing::Chunked),
        (Some(false), None) => Err(FramingError::UnknownCoding),
        (None, Some(0)) | (None, None) => Ok(Framing::Empty),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// A response's framing; `head_request` when it answers a `HEAD`.
pub(crate) fn of_response(
    fields: &Fields,
    status: u16,
    head_request: bool,
) -> Result<Framing, FramingError> {
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding wins over Content-Length (which the proxy then drops).
    match transfer_coding(fields) {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Ok(Framing::UntilClose),
        None => {}
    }
    Ok(match content_length(fields)? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// `Some(true)` when `Transfer-Encoding` is there and its last coding is chunked.
fn transfer_coding(fields: &Fields) -> Option<bool> {
    let mut present = false;
    let mut chunked = false;
    for value in fields.get_all(b"transfer-encoding") {
        present = true;
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() {
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        }
    }
    present.then_some(chunked)
}

/// The one `Content-Length` value (repeats of the same value allowed).
fn content_length(fields: &Fields) -> Result<Option<u64>, FramingError> {
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

/// A body being read: where its end is, and how much payload went by.
#[derive(Debug)]
pub(crate) struct BodyReader {
    state: State,
    /// Payload bytes so far (chunk framing not counted).
    pub(crate) payload: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Length(u64),
    UntilClose,
    /// In a chunk-size line: the size so far and how many hex digits.
    Size(u64, u8),
    /// In a chunk extension, up to the line's end.
    Extension(u64),
    /// Expecting the LF of a size line.
    SizeLf(u64),
    /// Inside chunk data: bytes left.
    Data(u64),
    /// After chunk data: expecting CR LF.
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line.
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting the LF of the final empty line.
    EndLf,
}

/// Longest chunk size accepted, in hex digits.
const MAX_SIZE_DIGITS: u8 = 15;

impl BodyReader {
    /// Starts reading a body framed as `framing`.
    pub(crate) fn new(framing: Framing) -> BodyReader {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size(0, 0),
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader { state, payload: 0 }
    }

    /// True once the whole body went by.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes at the front of `buf` belong to the body (all of them, or up to its
    /// end). Payload bytes are appended to `data` when given (chunked bodies decoded).
    pub(crate) fn take(
        &mut self,
        buf: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, FramingError> {
        let mut at = 0;
        while at < buf.len() {
            match self.state {
                State::Done => break,
                State::Length(left) | State::Data(left) => {
                    let n = left.min((buf.len() - at) as u64) as usize;
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&buf[at..at + n]);
                    }
                    at += n;
                    self.payload += n as u64;
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), l) => State::Length(l),
                        (_, 0) => State::DataCr,
                        (_, l) => State::Data(l),
                    };
                }
                State::UntilClose => {
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&buf[at..]);
                    }
                    self.payload += (buf.len() - at) as u64;
                    at = buf.len();
                }
                _ => {
                    self.state = self.step(buf[at])?;
                    at += 1;
                }
            }
        }
        Ok(at)
    }

    /// One byte of chunk framing.
    fn step(&self, byte: u8) -> Result<State, FramingError> {
        let bad = Err(FramingError::BadChunk);
        Ok(match (self.state, byte) {
            (State::Size(size, digits), _) if byte.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return bad;
                }
                let digit = (byte as char).to_digit(16).unwrap_or(0);
                State::Size(size << 4 | u64::from(digit), digits + 1)
            }
            (State::Size(_, 0), _) => return bad,
            (State::Size(size, _), b';' | b' ' | b'\t') => State::Extension(size),
            (State::Size(size, _), b'\r') => State::SizeLf(size),
            (State::Size(size, _) | State::Extension(size) | State::SizeLf(size), b'\n') => {
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            (State::Extension(size), _) => State::Extension(size),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr | State::DataLf, b'\n') => State::Size(0, 0),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::EndLf, b'\n') => State::Done,
            (State::Trailer, b'\n') => State::TrailerStart,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            _ => return bad,
        })
    }

    /// The sender closed: the end of an until-close body, an error for any other unfinished
    /// body.
    pub(crate) fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns (bytes taken, decoded payload, done).
    fn feed(framing: Framing, wire: &[u8], step: usize) -> (usize, Vec<u8>, bool) {
        let mut r = BodyReader::new(framing);
        let mut data = Vec::new();
        let mut taken = 0;
        for piece in wire.chunks(step) {
            let n = r.take(piece, Some(&mut data)).unwrap();
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        (taken, data, r.is_done())
    }

    #[test]
    fn chunked_bodies_decode_in_any_split_and_stop_at_their_end() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        let body_len = wire.len() - b"GET /next".len();
        for step in [1, 2, 3, 7, 100] {
            let (taken, data, done) = feed(Framing::Chunked, wire, step);
            assert_eq!(taken, body_len, "step {step}");
            assert_eq!(data, b"hello world");
            assert!(done);
        }
        let (taken, data, done) = feed(Framing::Chunked, b"A\nabcdefghij\n0\n\n", 4);
        assert_eq!((taken, &data[..], done), (16, &b"abcdefghij"[..], true));
    }

    #[test]
    fn malformed_chunks_are_errors_not_panics() {
        for wire in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
            b"0\r\n\rX",
        ] {
            let mut r = BodyReader::new(Framing::Chunked);
            assert_eq!(r.take(wire, None), Err(FramingError::BadChunk), "{wire:?}");
        }
        let mut r = BodyReader::new(Framing::Chunked);
        r.take(b"5\r\nhel", None).unwrap();
        assert_eq!(r.eof(), Err(FramingError::Incomplete));
    }

    #[test]
    fn length_bodies_stop_at_their_length_and_until_close_at_eof() {
        let (taken, data, done) = feed(Framing::Length(4), b"abcdefg", 3);
        assert_eq!((taken, &data[..], done), (4, &b"abcd"[..], true));
        let mut r = BodyReader::new(Framing::UntilClose);
        assert_eq!(r.take(b"abc", None), Ok(3));
        assert!(!r.is_done());
        r.eof().unwrap();
        assert!(r.is_done());
        assert_eq!(r.payload, 3);
    }
}
