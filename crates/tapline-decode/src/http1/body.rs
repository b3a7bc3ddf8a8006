//! [`BodyReader`]: finds where a body ends in bytes that arrive in pieces of any size, and
//! hands out its payload (chunked bodies decoded). The proxy relays the framed bytes and
//! reads payloads only for plugins; the passive decoder keeps payloads and trailers, and
//! skips over capture gaps.

use super::framing::{Framing, FramingError};
use super::head::MAX_FIELDS;

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: u32 = 4096;
/// Longest chunk size, in hex digits.
const MAX_SIZE_DIGITS: u8 = 15;
/// Most trailer bytes kept (beyond, trailers are read past but not kept).
const MAX_TRAILERS: usize = 16 * 1024;

/// A body being read: where its end is, and how much payload went by.
#[derive(Debug, Clone)]
pub struct BodyReader {
    state: State,
    payload: u64,
    /// The trailer section as received, when trailers are kept (boxed: a passive decoder
    /// keeps a reader per direction of every flow, and most bodies have no trailers).
    trailers: Option<Box<TrailerSection>>,
}

/// A trailer section's bytes as received.
#[derive(Debug, Clone, Default)]
struct TrailerSection(Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Length(u64),
    UntilClose,
    /// In a chunk-size line: the size so far and how many hex digits.
    Size(u64, u8),
    /// In a chunk extension, up to the line's end: the size, and the line's length so far.
    Extension(u64, u32),
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

impl BodyReader {
    /// Starts reading a body framed as `framing`.
    pub fn new(framing: Framing) -> BodyReader {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size(0, 0),
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader {
            state,
            payload: 0,
            trailers: None,
        }
    }

    /// The same, keeping a chunked body's trailer fields (see [`BodyReader::trailers`]).
    pub fn keeping_trailers(framing: Framing) -> BodyReader {
        BodyReader {
            trailers: (framing == Framing::Chunked).then(Box::default),
            ..BodyReader::new(framing)
        }
    }

    /// True once the whole body went by.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True for a body that ends only with the connection.
    pub fn is_until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Payload bytes so far (chunk framing not counted, skipped bytes counted).
    pub fn payload(&self) -> u64 {
        self.payload
    }

    /// How many bytes at the front of `buf` belong to the body: all of them, or up to its
    /// end. Its payload goes to `payload` piece by piece (chunked bodies decoded).
    pub fn take(
        &mut self,
        buf: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> Result<usize, FramingError> {
        let mut at = 0;
        while at < buf.len() {
            match self.state {
                State::Done => break,
                State::Length(left) | State::Data(left) => {
                    let n = left.min((buf.len() - at) as u64) as usize;
                    payload(&buf[at..at + n]);
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
                    payload(&buf[at..]);
                    self.payload += (buf.len() - at) as u64;
                    at = buf.len();
                }
                _ => {
                    let byte = buf[at];
                    let in_trailers = matches!(
                        self.state,
                        State::TrailerStart | State::Trailer | State::EndLf
                    );
                    self.state = self.step(byte)?;
                    if in_trailers {
                        self.keep_trailer(byte);
                    }
                    at += 1;
                }
            }
        }
        Ok(at)
    }

    /// `len` bytes of the body were lost (a capture gap). True when they fell inside a
    /// length-delimited body or one chunk's data, so reading goes on after them; false when
    /// they hit chunk framing (the body's end can no longer be found).
    pub fn skip(&mut self, len: u64) -> bool {
        match self.state {
            State::Length(left) if len <= left => {
                self.state = if len == left {
                    State::Done
                } else {
                    State::Length(left - len)
                };
            }
            State::Data(left) if len <= left => {
                self.state = if len == left {
                    State::DataCr
                } else {
                    State::Data(left - len)
                };
            }
            State::UntilClose => {}
            _ => return false,
        }
        self.payload += len;
        true
    }

    /// The sender closed: the end of an until-close body, an error for any other unfinished
    /// body.
    pub fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Incomplete),
        }
    }

    /// The trailer fields of a finished chunked body read with
    /// [`BodyReader::keeping_trailers`], in order.
    pub fn trailers(&self) -> Vec<(String, String)> {
        let Some(TrailerSection(raw)) = self.trailers.as_deref() else {
            return Vec::new();
        };
        raw.split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .take(MAX_FIELDS)
            .map(|line| {
                let line = String::from_utf8_lossy(line);
                let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                (name.trim().to_string(), value.trim().to_string())
            })
            .collect()
    }

    fn keep_trailer(&mut self, byte: u8) {
        if let Some(t) = self.trailers.as_mut().filter(|t| t.0.len() < MAX_TRAILERS) {
            t.0.push(byte);
        }
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
            (State::Size(size, digits), b';' | b' ' | b'\t') => {
                State::Extension(size, u32::from(digits) + 1)
            }
            (State::Size(size, _), b'\r') => State::SizeLf(size),
            (State::Size(size, _) | State::Extension(size, _) | State::SizeLf(size), b'\n') => {
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            (State::Extension(_, len), _) if len >= MAX_CHUNK_LINE => return bad,
            (State::Extension(size, len), _) => State::Extension(size, len + 1),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr | State::DataLf, b'\n') => State::Size(0, 0),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::EndLf, b'\n') => State::Done,
            (State::Trailer, b'\n') => State::TrailerStart,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            _ => return bad,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns (bytes taken, decoded payload, done).
    fn feed(reader: &mut BodyReader, wire: &[u8], step: usize) -> (usize, Vec<u8>) {
        let mut data = Vec::new();
        let mut taken = 0;
        for piece in wire.chunks(step) {
            let n = reader.take(piece, |p| data.extend_from_slice(p)).unwrap();
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        (taken, data)
    }

    #[test]
    fn chunked_bodies_decode_in_any_split_and_stop_at_their_end() {
        let wire =
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\nX-Two: b\r\n\r\nGET /next";
        let body_len = wire.len() - b"GET /next".len();
        for step in [1, 2, 3, 7, 100] {
            let mut r = BodyReader::keeping_trailers(Framing::Chunked);
            let (taken, data) = feed(&mut r, wire, step);
            assert_eq!(taken, body_len, "step {step}");
            assert_eq!(data, b"hello world");
            assert!(r.is_done());
            assert_eq!(r.payload(), 11);
            assert_eq!(
                r.trailers(),
                [
                    ("X-Trailer".to_string(), "1".to_string()),
                    ("X-Two".into(), "b".into())
                ],
                "step {step}"
            );
        }
        let mut r = BodyReader::new(Framing::Chunked);
        let (taken, data) = feed(&mut r, b"A\nabcdefghij\n0\n\n", 4);
        assert_eq!(
            (taken, &data[..], r.is_done()),
            (16, &b"abcdefghij"[..], true)
        );
        assert!(r.trailers().is_empty());
    }

    #[test]
    fn malformed_chunks_are_errors_not_panics() {
        let long_extension = format!("5;{}\r\n", "x".repeat(5000));
        for wire in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
            b"0\r\n\rX",
            long_extension.as_bytes(),
        ] {
            let mut r = BodyReader::new(Framing::Chunked);
            assert_eq!(
                r.take(wire, |_| {}),
                Err(FramingError::BadChunk),
                "{wire:?}"
            );
        }
        let mut r = BodyReader::new(Framing::Chunked);
        r.take(b"5\r\nhel", |_| {}).unwrap();
        assert_eq!(r.eof(), Err(FramingError::Incomplete));
    }

    #[test]
    fn length_bodies_stop_at_their_length_and_until_close_at_eof() {
        let mut r = BodyReader::new(Framing::Length(4));
        let (taken, data) = feed(&mut r, b"abcdefg", 3);
        assert_eq!((taken, &data[..], r.is_done()), (4, &b"abcd"[..], true));
        let mut r = BodyReader::new(Framing::UntilClose);
        assert_eq!(r.take(b"abc", |_| {}), Ok(3));
        assert!(!r.is_done() && r.is_until_close());
        r.eof().unwrap();
        assert!(r.is_done());
        assert_eq!(r.payload(), 3);
    }

    #[test]
    fn gaps_inside_data_are_skipped_and_gaps_in_framing_are_not() {
        let mut r = BodyReader::new(Framing::Length(10));
        assert!(r.skip(4));
        r.take(b"abcdef", |_| {}).unwrap();
        assert!(r.is_done());
        assert_eq!(r.payload(), 10);
        let mut r = BodyReader::new(Framing::Chunked);
        r.take(b"8\r\nab", |_| {}).unwrap();
        assert!(r.skip(6));
        assert_eq!(r.take(b"\r\n0\r\n\r\n", |_| {}), Ok(7));
        assert!(r.is_done());
        let mut r = BodyReader::new(Framing::Chunked);
        assert!(!r.skip(1), "a gap in a size line loses the framing");
        assert!(!BodyReader::new(Framing::Length(3)).skip(4));
    }
}
