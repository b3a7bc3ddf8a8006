//! HTTP/1 message heads as the proxy relays them: parsed in place with httparse (fields keep
//! their bytes, order and case), and written out again for the next hop without the
//! hop-by-hop fields (`hop_by_hop`).

use std::io::Write;
use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tapline_core::http::reason_phrase;
use tapline_core::{Headers, HttpRequest, HttpResponse};

use crate::hop_by_hop::HopByHop;

/// Most header fields in one head (hyper's default too); more is answered with 431.
pub(crate) const MAX_FIELDS: usize = 100;

/// Why a head cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// More fields than [`MAX_FIELDS`] (the size bound is the caller's).
    #[error("too many header fields")]
    TooManyFields,
    /// Not an HTTP/1 head.
    #[error("malformed message head: {0}")]
    Invalid(httparse::Error),
}

/// The header fields of one head, in wire order, as ranges of its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    raw: Bytes,
    list: Vec<(Range<usize>, Range<usize>)>,
}

impl Fields {
    /// Every field, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.list
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// Every value of `name` (lower case), in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    pub(crate) fn get<'a>(&'a self, name: &'a [u8]) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// True when a comma-separated `name` field holds `token`.
    pub(crate) fn has_token(&self, name: &[u8], token: &[u8]) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    }

    /// The fields as plugins and outputs see them: names in lower case, values as text.
    pub(crate) fn to_headers(&self) -> Headers {
        Headers(
            self.iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
        )
    }
}

/// A request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Its header fields.
    pub(crate) fields: Fields,
    method: Range<usize>,
    target: Range<usize>,
    /// The `x` of `HTTP/1.x`.
    pub(crate) minor: u8,
}

/// A response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Its header fields.
    pub(crate) fields: Fields,
    /// The status code.
    pub(crate) status: u16,
    reason: Range<usize>,
    /// The `x` of `HTTP/1.x`.
    pub(crate) minor: u8,
}

/// Where a parsed head's parts are in the buffer.
struct Located {
    len: usize,
    first: Range<usize>,
    second: Range<usize>,
    minor: u8,
    list: Vec<(Range<usize>, Range<usize>)>,
}

impl Located {
    /// Takes the head's bytes off `buf` into [`Fields`]. They are copied (a head is small)
    /// so that `buf` stays the one owner of its memory and is reused for the next read.
    fn fields(self, buf: &mut BytesMut) -> Fields {
        let raw = Bytes::copy_from_slice(&buf[..self.len]);
        buf.advance(self.len);
        Fields {
            raw,
            list: self.list,
        }
    }
}

/// The range of `part` (a slice of `buf`) within `buf`.
/// (httparse hands out slices of the buffer, except perhaps for empty parts: those, and
/// anything outside `buf`, give an empty range.)
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if part.is_empty() || start.saturating_add(part.len()) > buf.len() {
        return 0..0;
    }
    start..start + part.len()
}

fn located_fields(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
) -> Vec<(Range<usize>, Range<usize>)> {
    fields
        .iter()
        .map(|f| (range_in(buf, f.name.as_bytes()), range_in(buf, f.value)))
        .collect()
}

fn outcome(
    status: Result<httparse::Status<usize>, httparse::Error>,
) -> Result<Option<usize>, HeadError> {
    match status {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields),
        Err(e) => Err(HeadError::Invalid(e)),
    }
}

impl RequestHead {
    /// Parses a request head at the front of `buf`; once complete, its bytes are split off.
    /// `Ok(None)` while incomplete.
    pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
        let mut storage = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let located = match outcome(req.parse_with_uninit_headers(buf, &mut storage))? {
            None => return Ok(None),
            Some(len) => Located {
                len,
                first: range_in(buf, req.method.unwrap_or_default().as_bytes()),
                second: range_in(buf, req.path.unwrap_or_default().as_bytes()),
                minor: req.version.unwrap_or(1),
                list: located_fields(buf, req.headers),
            },
        };
        let (method, target, minor) =
            (located.first.clone(), located.second.clone(), located.minor);
        Ok(Some(RequestHead {
            fields: located.fields(buf),
            method,
            target,
            minor,
        }))
    }

    /// The head's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.fields.raw.len()
    }

    /// The method (a token, so ASCII).
    pub(crate) fn method(&self) -> &str {
        std::str::from_utf8(&self.fields.raw[self.method.clone()]).unwrap_or_default()
    }

    /// The request target as sent (absolute form on the forward proxy).
    pub(crate) fn target(&self) -> &str {
        std::str::from_utf8(&self.fields.raw[self.target.clone()]).unwrap_or_default()
    }

    /// True when the client keeps the connection open after this exchange.
    pub(crate) fn keep_alive(&self) -> bool {
        keep_alive(&self.fields, self.minor)
    }

    /// The protocols the client asks to switch to: `Upgrade`, when `Connection` lists it
    /// (HTTP/1.1 only).
    pub(crate) fn upgrade(&self) -> Option<&[u8]> {
        if self.minor == 0 || !self.fields.has_token(b"connection", b"upgrade") {
            return None;
        }
        self.fields.get(b"upgrade")
    }

    /// True when the client waits for `100 Continue` before sending the body.
    pub(crate) fn expects_continue(&self) -> bool {
        self.minor >= 1
            && self
                .fields
                .get(b"expect")
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
    }

    /// The request as plugins see it (body not read yet): `path` in origin form, `Host`
    /// first when the client sent none.
    pub(crate) fn view(&self, path: &str, url: String, host: &str) -> HttpRequest {
        let mut headers = self.fields.to_headers();
        if headers.get("host").is_none() {
            headers.0.insert(0, ("host".into(), host.to_string()));
        }
        HttpRequest {
            method: self.method().to_string(),
            path: path.to_string(),
            url: Some(url),
            version: version(self.minor).to_string(),
            headers,
            ..Default::default()
        }
    }
}

impl ResponseHead {
    /// Parses a response head at the front of `buf`; once complete, its bytes are split off.
    /// `Ok(None)` while incomplete.
    pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<ResponseHead>, HeadError> {
        let mut storage = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let (located, status) = match outcome(
            httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                buf,
                &mut storage,
            ),
        )? {
            None => return Ok(None),
            Some(len) => (
                Located {
                    len,
                    first: 0..0,
                    second: range_in(buf, resp.reason.unwrap_or_default().as_bytes()),
                    minor: resp.version.unwrap_or(1),
                    list: located_fields(buf, resp.headers),
                },
                resp.code.unwrap_or(502),
            ),
        };
        let (reason, minor) = (located.second.clone(), located.minor);
        Ok(Some(ResponseHead {
            fields: located.fields(buf),
            status,
            reason,
            minor,
        }))
    }

    /// The head's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.fields.raw.len()
    }

    /// The reason phrase as sent (may be empty).
    pub(crate) fn reason(&self) -> &[u8] {
        &self.fields.raw[self.reason.clone()]
    }

    /// True when the upstream keeps the connection open after this response.
    pub(crate) fn keep_alive(&self) -> bool {
        keep_alive(&self.fields, self.minor)
    }

    /// The response as plugins see it (body not read yet).
    pub(crate) fn view(&self) -> HttpResponse {
        let reason = String::from_utf8_lossy(self.reason()).into_owned();
        HttpResponse {
            status: self.status,
            reason: if reason.is_empty() {
                reason_phrase(self.status).to_string()
            } else {
                reason
            },
            version: version(self.minor).to_string(),
            headers: self.fields.to_headers(),
            ..Default::default()
        }
    }
}

/// HTTP/1.1 keeps connections unless `Connection: close`; HTTP/1.0 only with `keep-alive`.
fn keep_alive(fields: &Fields, minor: u8) -> bool {
    if minor >= 1 {
        !fields.has_token(b"connection", b"close")
    } else {
        fields.has_token(b"connection", b"keep-alive")
    }
}

fn version(minor: u8) -> &'static str {
    if minor == 0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

/// Which framing fields a head written for the next hop keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingFields {
    /// Both, as received (the body is relayed in its own framing).
    Keep,
    /// `Transfer-Encoding` only (a response that had both; it wins).
    DropLength,
    /// Neither: the writer frames the body itself.
    Drop,
}

impl FramingFields {
    fn drops(self, name: &[u8]) -> bool {
        match self {
            FramingFields::Keep => false,
            FramingFields::DropLength => name.eq_ignore_ascii_case(b"content-length"),
            FramingFields::Drop => {
                name.eq_ignore_ascii_case(b"content-length")
                    || name.eq_ignore_ascii_case(b"transfer-encoding")
            }
        }
    }
}

/// Writes a head's fields for the next hop: hop-by-hop ones and the framing fields `framing`
/// says to drop are left out. Returns whether a `Host` field was written.
pub(crate) fn write_fields<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    framing: FramingFields,
) -> bool {
    let hop = HopByHop::of(fields.clone());
    let mut host = false;
    for (name, value) in fields {
        if hop.drops(name) || framing.drops(name) {
            continue;
        }
        host |= name.eq_ignore_ascii_case(b"host");
        write_field(out, name, value);
    }
    host
}

/// Writes one `name: value` line.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The fields of `headers` (a plugin's) that are valid on the wire; others are dropped with
/// a warning.
pub(crate) fn valid_fields(headers: &Headers) -> Vec<(&[u8], &[u8])> {
    headers
        .iter()
        .filter(|(name, value)| {
            let ok = is_token(name) && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if !ok {
                tracing::warn!("dropping invalid header field {name:?} set by a plugin");
            }
            ok
        })
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

/// True for an RFC 9110 `token` (a field name, a method).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A whole response from a plugin (or the proxy itself), framed by its body's length; with
/// `close`, it says the connection closes after it.
pub(crate) fn write_response(out: &mut Vec<u8>, resp: &HttpResponse, close: bool) {
    write_status_line(out, resp.status, reason_phrase(resp.status).as_bytes());
    let fields = valid_fields(&resp.headers);
    write_fields(out, fields.iter().copied(), FramingFields::Drop);
    write_length(out, resp.body.len() as u64);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
}

/// `HTTP/1.1 <status> <reason>` and its line end.
pub(crate) fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{status} ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// A `content-length` field.
pub(crate) fn write_length(out: &mut Vec<u8>, len: u64) {
    let _ = write!(out, "content-length: {len}\r\n");
}

/// A short plain-text response the proxy answers with itself (errors, refusals).
pub(crate) fn short_response(status: u16, text: &str) -> HttpResponse {
    HttpResponse::new(
        status,
        Headers(vec![(
            "content-type".into(),
            "text/plain; charset=utf-8".into(),
        )]),
        Bytes::from(format!("{text}\n")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(wire: &[u8]) -> (RequestHead, BytesMut) {
        let mut buf = BytesMut::from(wire);
        let head = RequestHead::parse(&mut buf).unwrap().expect("complete");
        (head, buf)
    }

    #[test]
    fn request_heads_parse_in_place_and_leave_the_body() {
        let (head, rest) = request(
            b"POST http://example.test:8080/a?b=1 HTTP/1.1\r\nX-One: 1\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(head.method(), "POST");
        assert_eq!(head.target(), "http://example.test:8080/a?b=1");
        assert_eq!(head.minor, 1);
        assert_eq!(&rest[..], b"hello");
        assert!(head.keep_alive());
        let view = head.view(
            "/a?b=1",
            "http://example.test:8080/a?b=1".into(),
            "example.test:8080",
        );
        assert_eq!(
            view.headers.0,
            vec![
                ("host".to_string(), "example.test:8080".to_string()),
                ("x-one".into(), "1".into()),
                ("content-length".into(), "5".into())
            ]
        );
        let mut partial = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(RequestHead::parse(&mut partial).unwrap().is_none());
        assert_eq!(partial.len(), 25, "an incomplete head stays in the buffer");
    }

    #[test]
    fn forwarded_fields_keep_case_and_lose_hop_by_hop_ones() {
        let (head, _) = request(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n\
              X-Secret: 1\r\nKeep-Alive: 5\r\nX-Kept: Yes\r\nTE: trailers\r\n\r\n",
        );
        let mut out = Vec::new();
        assert!(write_fields(
            &mut out,
            head.fields.iter(),
            FramingFields::Keep
        ));
        assert_eq!(out, b"Host: h\r\nX-Kept: Yes\r\n");
    }

    #[test]
    fn http_1_0_keeps_alive_only_when_asked() {
        assert!(!request(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive());
        assert!(request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .0
            .keep_alive());
        assert!(!request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .0
            .keep_alive());
    }

    #[test]
    fn built_responses_are_framed_by_their_body() {
        let mut r = short_response(502, "upstream down");
        r.headers.add("Transfer-Encoding", "chunked");
        r.headers.add("Content-Length", "999");
        r.headers.add("bad name", "x");
        let mut out = Vec::new();
        write_response(&mut out, &r, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 14\r\nconnection: close\r\n\r\nupstream down\n"
        );
    }

    #[test]
    fn responses_parse_with_their_reason() {
        let mut buf = BytesMut::from(&b"HTTP/1.0 404 Not Here\r\nContent-Length: 0\r\n\r\n"[..]);
        let head = ResponseHead::parse(&mut buf).unwrap().unwrap();
        assert_eq!(
            (head.status, head.reason(), head.minor),
            (404, &b"Not Here"[..], 0)
        );
        assert!(!head.keep_alive());
        assert_eq!(head.view().reason, "Not Here");
        let mut many = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            ResponseHead::parse(&mut many),
            Err(HeadError::TooManyFields)
        ));
    }
}
