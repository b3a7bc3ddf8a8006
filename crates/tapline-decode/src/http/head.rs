//! Request and response heads, parsed with httparse into tapline's message types, and the
//! framing rules (RFC 9112 §6) that say how the body that follows is delimited.

use tapline_core::{Headers, HttpRequest, HttpResponse};

/// Most header fields accepted in one head.
const MAX_HEADERS: usize = 128;

/// The outcome of parsing a head from the start of a buffer.
pub(crate) enum Parsed<T> {
    /// A head of `usize` bytes.
    Complete(T, usize),
    /// More bytes are needed.
    Partial,
    /// Not an HTTP/1.x head.
    Invalid,
}

/// How a message's body is delimited (RFC 9112 §6); the proxy's relay uses it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

fn config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

fn headers(parsed: &[httparse::Header<'_>]) -> Headers {
    Headers(
        parsed
            .iter()
            .map(|h| (h.name.to_string(), text(h.value)))
            .collect(),
    )
}

/// Header bytes as text: valid UTF-8 (the usual ASCII) copied as is, else lossily.
fn text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(value).into_owned(),
    }
}

fn version(minor: Option<u8>) -> String {
    match minor {
        Some(0) => "HTTP/1.0".into(),
        _ => "HTTP/1.1".into(),
    }
}

/// Parses a request head at the start of `buf`.
pub(crate) fn parse_request(buf: &[u8]) -> Parsed<HttpRequest> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match config().parse_request(&mut req, buf) {
        Ok(httparse::Status::Complete(n)) => {
            let method = req.method.unwrap_or_default().to_string();
            let path = req.path.unwrap_or_default().to_string();
            let headers = headers(req.headers);
            let url = request_url(&method, &path, &headers);
            Parsed::Complete(
                HttpRequest {
                    method,
                    path,
                    url,
                    version: version(req.version),
                    headers,
                    ..Default::default()
                },
                n,
            )
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

/// Parses a response head at the start of `buf`.
pub(crate) fn parse_response(buf: &[u8]) -> Parsed<HttpResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match config().parse_response(&mut resp, buf) {
        Ok(httparse::Status::Complete(n)) => Parsed::Complete(
            HttpResponse {
                status: resp.code.unwrap_or_default(),
                reason: resp.reason.unwrap_or_default().to_string(),
                version: version(resp.version),
                headers: headers(resp.headers),
                ..Default::default()
            },
            n,
        ),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

/// The absolute URL of a request: its target when in absolute form, else `http://Host/path`.
fn request_url(method: &str, path: &str, headers: &Headers) -> Option<String> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return None;
    }
    if path.starts_with("http://") || path.starts_with("https://") {
        return Some(path.to_string());
    }
    let host = headers.get("host")?;
    if !path.starts_with('/') || host.is_empty() {
        return None;
    }
    let mut url = String::with_capacity("http://".len() + host.len() + path.len());
    url.push_str("http://");
    url.push_str(host);
    url.push_str(path);
    Some(url)
}

/// Body framing of a request; `None` when the head frames it impossibly (bad Content-Length).
pub(crate) fn request_framing(req: &HttpRequest) -> Option<Framing> {
    if req.headers.has_token("transfer-encoding", "chunked") {
        return Some(Framing::Chunked);
    }
    match content_length(&req.headers)? {
        Some(0) | None => Some(Framing::Empty),
        Some(n) => Some(Framing::Length(n)),
    }
}

/// Body framing of a response; `to_head` when it answers a HEAD request.
pub(crate) fn response_framing(resp: &HttpResponse, to_head: bool) -> Framing {
    if to_head || (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304 {
        return Framing::Empty;
    }
    if resp.headers.has_token("transfer-encoding", "chunked") {
        return Framing::Chunked;
    }
    match content_length(&resp.headers) {
        Some(Some(0)) => Framing::Empty,
        Some(Some(n)) => Framing::Length(n),
        _ => Framing::UntilClose,
    }
}

/// The Content-Length: `Some(None)` when absent, `None` when invalid or contradictory.
fn content_length(headers: &Headers) -> Option<Option<u64>> {
    let mut found: Option<u64> = None;
    for value in headers.get_all("content-length") {
        for part in value.split(',') {
            let n: u64 = part.trim().parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_and_url() {
        let Parsed::Complete(req, n) =
            parse_request(b"GET /a?b=1 HTTP/1.1\r\nHost: x:8\r\nX-A: 1\r\n\r\nrest")
        else {
            panic!("complete")
        };
        assert_eq!(n, 42);
        assert_eq!(req.method, "GET");
        assert_eq!(req.url.as_deref(), Some("http://x:8/a?b=1"));
        assert_eq!(req.headers.len(), 2);
        assert_eq!(request_framing(&req), Some(Framing::Empty));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(b"\x00\x01garbage\r\n\r\n"),
            Parsed::Invalid
        ));
    }

    #[test]
    fn framing_rules() {
        let resp = |status: u16, h: &[(&str, &str)]| HttpResponse {
            status,
            headers: h.iter().copied().collect(),
            ..Default::default()
        };
        let cl = [("Content-Length", "10")];
        assert_eq!(response_framing(&resp(200, &cl), true), Framing::Empty);
        assert_eq!(response_framing(&resp(304, &cl), false), Framing::Empty);
        assert_eq!(response_framing(&resp(204, &[]), false), Framing::Empty);
        assert_eq!(response_framing(&resp(100, &[]), false), Framing::Empty);
        assert_eq!(
            response_framing(&resp(200, &cl), false),
            Framing::Length(10)
        );
        assert_eq!(
            response_framing(&resp(200, &[("Transfer-Encoding", "gzip, chunked")]), false),
            Framing::Chunked
        );
        assert_eq!(
            response_framing(&resp(200, &[]), false),
            Framing::UntilClose
        );
        assert_eq!(
            response_framing(&resp(200, &[("Content-Length", "x")]), false),
            Framing::UntilClose
        );
        let req = |h: &[(&str, &str)]| HttpRequest {
            headers: h.iter().copied().collect(),
            ..Default::default()
        };
        assert_eq!(
            request_framing(&req(&[("Content-Length", "3, 3")])),
            Some(Framing::Length(3))
        );
        assert_eq!(request_framing(&req(&[("Content-Length", "3, 4")])), None);
        assert_eq!(
            request_framing(&req(&[("Content-Length", "99999999999999999999999")])),
            None
        );
    }
}
