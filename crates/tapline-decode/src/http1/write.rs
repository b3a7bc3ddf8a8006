//! Writing HTTP/1 heads: start lines, fields as given (case and order kept) without the
//! hop-by-hop ones, the framing fields a relayed or rebuilt body needs, and whole responses
//! that the proxy or a plugin answers with.

use std::io::Write;

use tapline_core::http::reason_phrase;
use tapline_core::{Headers, HttpResponse};

use super::hop_by_hop::HopByHop;

/// Which framing fields a head written for the next hop keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFields {
    /// Both, as received (the body is relayed in its own framing).
    Keep,
    /// `Transfer-Encoding` only (a response that had both; it wins).
    DropLength,
    /// `Content-Length` only (a bodiless response, whose length says what a `GET` would get).
    DropCoding,
    /// Neither: the writer frames the body itself.
    Drop,
}

impl FramingFields {
    fn drops(self, name: &[u8]) -> bool {
        match self {
            FramingFields::Keep => false,
            FramingFields::DropLength => name.eq_ignore_ascii_case(b"content-length"),
            FramingFields::DropCoding => name.eq_ignore_ascii_case(b"transfer-encoding"),
            FramingFields::Drop => {
                name.eq_ignore_ascii_case(b"content-length")
                    || name.eq_ignore_ascii_case(b"transfer-encoding")
            }
        }
    }
}

/// `METHOD target VERSION` and its line end.
pub fn write_request_line(out: &mut Vec<u8>, method: &[u8], target: &[u8], version: &[u8]) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.push(b' ');
    out.extend_from_slice(version);
    out.extend_from_slice(b"\r\n");
}

/// `VERSION status reason` and its line end.
pub fn write_status_line(out: &mut Vec<u8>, version: &[u8], status: u16, reason: &[u8]) {
    out.extend_from_slice(version);
    let _ = write!(out, " {status} ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Writes a head's fields for the next hop: hop-by-hop ones and the framing fields `framing`
/// says to drop are left out, the rest keep their case and order.
pub fn write_fields<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    framing: FramingFields,
) {
    let hop = HopByHop::of(fields.clone());
    for (name, value) in fields {
        if !hop.drops(name) && !framing.drops(name) {
            write_field(out, name, value);
        }
    }
}

/// Writes a head's fields for the next hop with the body framed by its length `len` (a body
/// that was changed): hop-by-hop fields are left out, the first framing field becomes the
/// `Content-Length` in its place (a `Content-Length`'s name keeps its case), other framing
/// fields go, and without any the length is added at the end. `None` writes no length (a
/// message that must have no body keeps none).
pub fn write_fields_reframed<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    len: Option<u64>,
) {
    let hop = HopByHop::of(fields.clone());
    let mut framed = false;
    for (name, value) in fields {
        if hop.drops(name) {
            continue;
        }
        if !FramingFields::Drop.drops(name) {
            write_field(out, name, value);
            continue;
        }
        if framed {
            continue;
        }
        framed = true;
        if let Some(len) = len {
            let name: &[u8] = if name.eq_ignore_ascii_case(b"content-length") {
                name
            } else {
                b"Content-Length"
            };
            write_field(out, name, len.to_string().as_bytes());
        }
    }
    if let (false, Some(len)) = (framed, len) {
        write_length(out, len);
    }
}

/// The framing fields of a head, in order (to tell whether a hook changed them).
pub fn framing_fields<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    fields.filter(|(n, _)| FramingFields::Drop.drops(n))
}

/// Writes one `name: value` line.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` field.
pub fn write_length(out: &mut Vec<u8>, len: u64) {
    let _ = write!(out, "Content-Length: {len}\r\n");
}

/// The fields of `headers` (a plugin's, so unchecked) that are valid on the wire; the others
/// are dropped with a warning.
pub fn valid_fields(headers: &Headers) -> Vec<(&[u8], &[u8])> {
    let mut valid = Vec::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let value = value.as_bytes();
        if is_token(name) && !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            valid.push((name.as_bytes(), value));
        } else {
            tracing::warn!("dropping invalid header field {name:?} set by a plugin");
        }
    }
    valid
}

pub use tapline_core::http::is_token;

/// A whole HTTP/1.1 response from a plugin (or the proxy itself), framed by its body's
/// length; with `close`, it says the connection closes after it.
pub fn write_response(out: &mut Vec<u8>, resp: &HttpResponse, close: bool) {
    write_status_line(
        out,
        b"HTTP/1.1",
        resp.status,
        reason_phrase(resp.status).as_bytes(),
    );
    write_fields(
        out,
        valid_fields(&resp.headers).into_iter(),
        FramingFields::Drop,
    );
    write_length(out, resp.body.len() as u64);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn fields_keep_case_and_order_and_lose_hop_by_hop_ones() {
        let fields: [(&[u8], &[u8]); 6] = [
            (b"Host", b"h"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"5"),
            (b"x-Kept", b"Yes"),
            (b"Content-Length", b"3"),
        ];
        let mut out = Vec::new();
        write_fields(&mut out, fields.iter().copied(), FramingFields::Keep);
        assert_eq!(out, b"Host: h\r\nx-Kept: Yes\r\nContent-Length: 3\r\n");
        out.clear();
        write_fields(&mut out, fields.iter().copied(), FramingFields::Drop);
        assert_eq!(out, b"Host: h\r\nx-Kept: Yes\r\n");
    }

    #[test]
    fn built_responses_are_framed_by_their_body() {
        let mut r = HttpResponse::new(
            502,
            Headers(vec![("Content-Type".into(), "text/plain".into())]),
            Bytes::from_static(b"upstream down\n"),
        );
        r.headers.add("Transfer-Encoding", "chunked");
        r.headers.add("Content-Length", "999");
        r.headers.add("bad name", "x");
        let mut out = Vec::new();
        write_response(&mut out, &r, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\
             Content-Length: 14\r\nConnection: close\r\n\r\nupstream down\n"
        );
    }

    #[test]
    fn a_changed_body_is_framed_by_its_length_in_place() {
        let fields: [(&[u8], &[u8]); 4] = [
            (b"Host", b"h"),
            (b"content-length", b"3"),
            (b"X-After", b"1"),
            (b"Content-Length", b"3"),
        ];
        let mut out = Vec::new();
        write_fields_reframed(&mut out, fields.iter().copied(), Some(10));
        assert_eq!(out, b"Host: h\r\ncontent-length: 10\r\nX-After: 1\r\n");
        let chunked: [(&[u8], &[u8]); 2] = [(b"Transfer-Encoding", b"chunked"), (b"X", b"y")];
        out.clear();
        write_fields_reframed(&mut out, chunked.iter().copied(), Some(2));
        assert_eq!(out, b"Content-Length: 2\r\nX: y\r\n");
        out.clear();
        write_fields_reframed(&mut out, [(&b"X"[..], &b"y"[..])].into_iter(), Some(0));
        assert_eq!(out, b"X: y\r\nContent-Length: 0\r\n");
        assert_eq!(framing_fields(fields.iter().copied()).count(), 2);
    }

    #[test]
    fn start_lines() {
        let mut out = Vec::new();
        write_request_line(&mut out, b"GET", b"/a?b", b"HTTP/1.1");
        write_status_line(&mut out, b"HTTP/1.0", 204, b"");
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nHTTP/1.0 204 \r\n");
        assert!(is_token("X-Custom_1") && !is_token("bad name") && !is_token(""));
    }
}
