//! Request and response heads, parsed in place with httparse into views over the head's
//! bytes: a field is two spans of those bytes, so its case, order and duplicates are the
//! wire's. A view borrows the buffer it was parsed from (`RequestHead<&[u8]>`); the proxy,
//! which keeps a head across reads, takes an owned copy (`RequestHead<Bytes>`).

use std::mem::MaybeUninit;

use bytes::Bytes;
use tapline_core::http::reason_phrase;
use tapline_core::http::SmolStr;
use tapline_core::{Headers, HttpRequest, HttpResponse};

use super::framing::{self, Framing, FramingError};
use super::{version_text, Strictness};

/// Most header fields in one head; more is an error (the proxy answers 431).
pub const MAX_FIELDS: usize = 128;

/// Why bytes are not a usable head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// More fields than [`MAX_FIELDS`] (the size bound is the caller's).
    #[error("too many header fields")]
    TooManyFields,
    /// Not an HTTP/1 head.
    #[error("malformed message head: {0}")]
    Invalid(httparse::Error),
}

/// Where a part of a head is: start and end offsets in its bytes.
type Span = (u32, u32);

/// The header fields of one head, in wire order, as spans of its bytes.
#[derive(Debug, Clone)]
pub struct Fields<B> {
    raw: B,
    list: Vec<(Span, Span)>,
}

impl<B: AsRef<[u8]>> Fields<B> {
    /// Every field, in order, as sent.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        let raw = self.raw.as_ref();
        self.list
            .iter()
            .map(move |&(n, v)| (slice(raw, n), slice(raw, v)))
    }

    /// Every value of `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    pub fn get<'a>(&'a self, name: &'a [u8]) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// True when a comma-separated `name` field holds `token` (any case).
    pub fn has_token(&self, name: &[u8], token: &[u8]) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The fields as plugins and outputs see them: names and order as on the wire, values
    /// as text (invalid UTF-8 replaced).
    pub fn to_headers(&self) -> Headers {
        Headers(
            self.iter()
                .map(|(n, v)| (field_text(n), field_text(v)))
                .collect(),
        )
    }

    fn copied(&self) -> Fields<Bytes> {
        Fields {
            raw: Bytes::copy_from_slice(self.raw.as_ref()),
            list: self.list.clone(),
        }
    }
}

/// A request head.
#[derive(Debug, Clone)]
pub struct RequestHead<B = Bytes> {
    fields: Fields<B>,
    method: Span,
    target: Span,
    minor: u8,
}

/// A response head.
#[derive(Debug, Clone)]
pub struct ResponseHead<B = Bytes> {
    fields: Fields<B>,
    status: u16,
    reason: Span,
    minor: u8,
}

impl<'a> RequestHead<&'a [u8]> {
    /// Parses a request head at the start of `buf`: `Ok(None)` while incomplete. The view
    /// covers the head's bytes only ([`RequestHead::size`]); the body follows in `buf`.
    pub fn parse(buf: &'a [u8], strictness: Strictness) -> Result<Option<Self>, HeadError> {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let status =
            config(strictness).parse_request_with_uninit_headers(&mut req, buf, &mut storage);
        let Some(len) = outcome(status)? else {
            return Ok(None);
        };
        let raw = &buf[..len];
        Ok(Some(RequestHead {
            method: span(raw, req.method.unwrap_or_default().as_bytes()),
            target: span(raw, req.path.unwrap_or_default().as_bytes()),
            minor: req.version.unwrap_or(1),
            fields: located(raw, req.headers),
        }))
    }
}

impl<'a> ResponseHead<&'a [u8]> {
    /// Parses a response head at the start of `buf`: `Ok(None)` while incomplete.
    pub fn parse(buf: &'a [u8], strictness: Strictness) -> Result<Option<Self>, HeadError> {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let status =
            config(strictness).parse_response_with_uninit_headers(&mut resp, buf, &mut storage);
        let Some(len) = outcome(status)? else {
            return Ok(None);
        };
        let raw = &buf[..len];
        Ok(Some(ResponseHead {
            status: resp.code.unwrap_or_default(),
            reason: span(raw, resp.reason.unwrap_or_default().as_bytes()),
            minor: resp.version.unwrap_or(1),
            fields: located(raw, resp.headers),
        }))
    }
}

impl<B: AsRef<[u8]>> RequestHead<B> {
    /// A copy that owns its bytes (to keep across reads of the buffer it came from).
    pub fn to_owned(&self) -> RequestHead<Bytes> {
        RequestHead {
            fields: self.fields.copied(),
            method: self.method,
            target: self.target,
            minor: self.minor,
        }
    }

    /// The head's size in bytes.
    pub fn size(&self) -> usize {
        self.fields.raw.as_ref().len()
    }

    /// The header fields.
    pub fn fields(&self) -> &Fields<B> {
        &self.fields
    }

    /// The method (a token, so ASCII).
    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The request target as sent (origin form, or absolute form to a proxy).
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// The `x` of `HTTP/1.x`.
    pub fn minor(&self) -> u8 {
        self.minor
    }

    /// True when the client keeps the connection open after this exchange.
    pub fn keep_alive(&self) -> bool {
        keep_alive(&self.fields, self.minor)
    }

    /// The protocols the client asks to switch to: `Upgrade`, when `Connection` lists it
    /// (HTTP/1.1 only).
    pub fn upgrade(&self) -> Option<&[u8]> {
        if self.minor == 0 || !self.fields.has_token(b"connection", b"upgrade") {
            return None;
        }
        self.fields.get(b"upgrade")
    }

    /// True when the client waits for `100 Continue` before sending the body.
    pub fn expects_continue(&self) -> bool {
        self.minor >= 1
            && self
                .fields
                .get(b"expect")
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
    }

    /// How the body that follows is framed.
    pub fn framing(&self, strictness: Strictness) -> Result<Framing, FramingError> {
        framing::of_request(&self.fields, strictness)
    }

    /// The request as plugins and outputs see it, body not read yet: method, `path` and
    /// `url` as given, fields as on the wire.
    pub fn to_request(&self, path: &str, url: Option<String>) -> HttpRequest {
        HttpRequest {
            method: self.method().to_string(),
            path: path.to_string(),
            url,
            version: version_text(self.minor).to_string(),
            headers: self.fields.to_headers(),
            ..Default::default()
        }
    }

    fn text(&self, at: Span) -> &str {
        std::str::from_utf8(slice(self.fields.raw.as_ref(), at)).unwrap_or_default()
    }
}

impl<B: AsRef<[u8]>> ResponseHead<B> {
    /// A copy that owns its bytes.
    pub fn to_owned(&self) -> ResponseHead<Bytes> {
        ResponseHead {
            fields: self.fields.copied(),
            status: self.status,
            reason: self.reason,
            minor: self.minor,
        }
    }

    /// The head's size in bytes.
    pub fn size(&self) -> usize {
        self.fields.raw.as_ref().len()
    }

    /// The header fields.
    pub fn fields(&self) -> &Fields<B> {
        &self.fields
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent (may be empty).
    pub fn reason(&self) -> &[u8] {
        slice(self.fields.raw.as_ref(), self.reason)
    }

    /// The `x` of `HTTP/1.x`.
    pub fn minor(&self) -> u8 {
        self.minor
    }

    /// True when the server keeps the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        keep_alive(&self.fields, self.minor)
    }

    /// How the body that follows is framed; `head_request` when it answers a `HEAD`.
    pub fn framing(
        &self,
        head_request: bool,
        strictness: Strictness,
    ) -> Result<Framing, FramingError> {
        framing::of_response(&self.fields, self.status, head_request, strictness)
    }

    /// The response as plugins and outputs see it, body not read yet (an empty reason
    /// phrase becomes the standard one).
    pub fn to_response(&self) -> HttpResponse {
        let reason = text(self.reason());
        HttpResponse {
            status: self.status,
            reason: if reason.is_empty() {
                reason_phrase(self.status).to_string()
            } else {
                reason
            },
            version: version_text(self.minor).to_string(),
            headers: self.fields.to_headers(),
            ..Default::default()
        }
    }
}

/// HTTP/1.1 keeps connections unless `Connection: close`; HTTP/1.0 only with `keep-alive`.
fn keep_alive<B: AsRef<[u8]>>(fields: &Fields<B>, minor: u8) -> bool {
    if minor >= 1 {
        !fields.has_token(b"connection", b"close")
    } else {
        fields.has_token(b"connection", b"keep-alive")
    }
}

fn config(strictness: Strictness) -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    if strictness == Strictness::Lenient {
        c.allow_multiple_spaces_in_request_line_delimiters(true)
            .allow_multiple_spaces_in_response_status_delimiters(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .allow_spaces_after_header_name_in_responses(true)
            .ignore_invalid_headers_in_responses(true);
    }
    c
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

fn located<'a>(raw: &'a [u8], fields: &[httparse::Header<'_>]) -> Fields<&'a [u8]> {
    Fields {
        raw,
        list: fields
            .iter()
            .map(|f| (span(raw, f.name.as_bytes()), span(raw, f.value)))
            .collect(),
    }
}

/// Where `part` (a slice of `raw`, as httparse hands out) is in `raw`. Empty parts, and
/// anything outside `raw`, give an empty span.
fn span(raw: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
    if part.is_empty() || start.saturating_add(part.len()) > raw.len() {
        return (0, 0);
    }
    (start as u32, (start + part.len()) as u32)
}

fn slice(raw: &[u8], (start, end): Span) -> &[u8] {
    raw.get(start as usize..end as usize).unwrap_or_default()
}

/// Wire bytes as text: valid UTF-8 (the usual ASCII) as is, else with replacements.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A field's name or value as text (inline when short).
fn field_text(bytes: &[u8]) -> SmolStr {
    match std::str::from_utf8(bytes) {
        Ok(s) => SmolStr::new(s),
        Err(_) => SmolStr::new(String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(wire: &[u8]) -> RequestHead<&[u8]> {
        RequestHead::parse(wire, Strictness::Strict)
            .unwrap()
            .expect("complete")
    }

    #[test]
    fn request_heads_are_views_that_keep_case_order_and_duplicates() {
        let wire = b"POST http://example.test:8080/a?b=1 HTTP/1.1\r\nX-One: 1\r\nhost: h\r\n\
                     x-one: 2\r\nContent-Length: 5\r\n\r\nhello";
        let head = request(wire);
        assert_eq!(head.method(), "POST");
        assert_eq!(head.target(), "http://example.test:8080/a?b=1");
        assert_eq!(head.minor(), 1);
        assert_eq!(head.size(), wire.len() - 5);
        assert!(head.keep_alive());
        assert_eq!(
            head.fields().to_headers().iter().collect::<Vec<_>>(),
            [
                ("X-One", "1"),
                ("host", "h"),
                ("x-one", "2"),
                ("Content-Length", "5")
            ]
        );
        assert_eq!(head.fields().get_all(b"X-ONE").count(), 2);
        assert_eq!(head.framing(Strictness::Strict), Ok(Framing::Length(5)));
        let owned = head.to_owned();
        assert_eq!(owned.target(), head.target());
        let req = owned.to_request("/a?b=1", None);
        assert_eq!(req.headers.0[1].0, "host");
        assert!(
            RequestHead::parse(b"GET / HTTP/1.1\r\nHost: x\r\n", Strictness::Strict)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn http_1_0_keeps_alive_only_when_asked() {
        assert!(!request(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
    }

    #[test]
    fn upgrades_and_continues_are_recognised() {
        let h = request(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(h.upgrade(), Some(&b"websocket"[..]));
        assert!(
            request(b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
                .upgrade()
                .is_none()
        );
        assert!(request(b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expects_continue());
    }

    #[test]
    fn responses_parse_with_their_reason_and_too_many_fields_are_refused() {
        let wire = b"HTTP/1.0 404 Not Here\r\nContent-Length: 0\r\n\r\n";
        let head = ResponseHead::parse(wire, Strictness::Strict)
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.status(), head.reason(), head.minor()),
            (404, &b"Not Here"[..], 0)
        );
        assert!(!head.keep_alive());
        assert_eq!(head.to_response().reason, "Not Here");
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            ResponseHead::parse(&many, Strictness::Lenient).unwrap_err(),
            HeadError::TooManyFields
        );
    }

    #[test]
    fn lenient_heads_forgive_what_servers_forgive() {
        let folded = b"HTTP/1.1  200  OK\r\nX-A: 1\r\n  continued\r\nBad Name: x\r\n\r\n";
        assert!(ResponseHead::parse(folded, Strictness::Strict).is_err());
        let head = ResponseHead::parse(folded, Strictness::Lenient)
            .unwrap()
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.fields().len(), 1);
        let spaced = b"GET  /  HTTP/1.1\r\n\r\n";
        assert!(RequestHead::parse(spaced, Strictness::Strict).is_err());
        assert!(RequestHead::parse(spaced, Strictness::Lenient)
            .unwrap()
            .is_some());
    }
}
