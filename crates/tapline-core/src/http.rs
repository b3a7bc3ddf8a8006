//! HTTP/1.x messages as plugins and outputs see them: ordered headers, bounded bodies.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
pub use smol_str::SmolStr;

/// Header fields in wire order, duplicates kept, names as sent. Names compare
/// case-insensitively. Names and values are [`SmolStr`]s: most fit inline (no allocation),
/// and copying a message's headers (a plugin's rollback copy, a transaction's) allocates
/// at most the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Headers(pub Vec<(SmolStr, SmolStr)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every `name` field by one with `value`, in place of the first (or at the end).
    /// The field takes the case of `name` as given: what a plugin writes is what goes out.
    pub fn set(&mut self, name: &str, value: impl Into<SmolStr>) {
        let value = value.into();
        match self
            .0
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(i) => {
                if self.0[i].0 != name {
                    self.0[i].0 = SmolStr::new(name);
                }
                self.0[i].1 = value;
                let mut j = i + 1;
                while j < self.0.len() {
                    if self.0[j].0.eq_ignore_ascii_case(name) {
                        self.0.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.0.push((SmolStr::new(name), value)),
        }
    }

    /// Appends a field, keeping existing ones.
    pub fn add(&mut self, name: impl Into<SmolStr>, value: impl Into<SmolStr>) {
        self.0.push((name.into(), value.into()));
    }

    /// Removes every `name` field; says whether one was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.0.len()
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when a comma-separated `name` field holds `token` (case-insensitive), as for
    /// `Connection: keep-alive, Upgrade` or `Transfer-Encoding: gzip, chunked`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

impl<N: Into<SmolStr>, V: Into<SmolStr>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// An HTTP request. In proxy mode plugins may change any field; the proxy keeps framing right.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Origin form: `path?query` (for CONNECT, `host:port`).
    pub path: String,
    /// Absolute URL when known (forward proxy, or `Host` + path in capture).
    pub url: Option<String>,
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub version: String,
    /// Header fields in order.
    pub headers: Headers,
    /// The body, or its first `body_limit` bytes.
    #[serde(skip)]
    pub body: Bytes,
    /// True when `body` holds only a prefix of the body.
    pub body_truncated: bool,
    /// The full body length on the wire (decoded from chunking), when known.
    pub body_len: u64,
}

impl HttpRequest {
    /// Replaces the whole body (a plugin's edit): the length follows, nothing is truncated.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
        self.body_len = self.body.len() as u64;
        self.body_truncated = false;
    }

    /// A copy with only the request line (method, path, URL): what a transaction carries
    /// when nobody reads its heads.
    pub fn line_only(&self) -> HttpRequest {
        HttpRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            url: self.url.clone(),
            ..Default::default()
        }
    }

    /// The method and path, as a response remembers its request.
    pub fn line(&self) -> RequestLine {
        RequestLine {
            method: self.method.clone(),
            path: self.path.clone(),
            url: self.url.clone(),
        }
    }
}

/// The request a response answers, as carried by the response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestLine {
    /// The request's method.
    pub method: String,
    /// The request's origin-form path.
    pub path: String,
    /// The request's absolute URL, when known.
    pub url: Option<String>,
}

/// An HTTP response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub version: String,
    /// Header fields in order.
    pub headers: Headers,
    /// The body, or its first `body_limit` bytes.
    #[serde(skip)]
    pub body: Bytes,
    /// True when `body` holds only a prefix of the body.
    pub body_truncated: bool,
    /// The full body length (after de-chunking), when known.
    pub body_len: u64,
    /// The request this answers, when known.
    pub request: Option<RequestLine>,
    /// Time from the request's end to this response's head.
    pub latency: Option<Duration>,
}

impl HttpResponse {
    /// Replaces the whole body (a plugin's edit): the length follows, nothing is truncated.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
        self.body_len = self.body.len() as u64;
        self.body_truncated = false;
    }

    /// A copy with only the status and latency: what a transaction carries when nobody reads
    /// its heads.
    pub fn status_only(&self) -> HttpResponse {
        HttpResponse {
            status: self.status,
            latency: self.latency,
            ..Default::default()
        }
    }

    /// A response a plugin builds to answer or replace: status, headers and a full body.
    pub fn new(status: u16, headers: Headers, body: Bytes) -> Self {
        HttpResponse {
            status,
            reason: reason_phrase(status).to_string(),
            version: "HTTP/1.1".into(),
            headers,
            body_len: body.len() as u64,
            body,
            ..Default::default()
        }
    }
}

/// True for an RFC 9110 `token` (a field name, a method).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| TOKEN[usize::from(b)])
}

/// Which bytes a `token` may hold: letters, digits and ``!#$%&'*+-.^_`|~``.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// The standard reason phrase for a status code, or `""`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_and_duplicates() {
        let mut h: Headers = [("Host", "a"), ("X-A", "1"), ("x-a", "2")]
            .into_iter()
            .collect();
        assert_eq!(h.get("X-a"), Some("1"));
        assert_eq!(h.get_all("x-A").collect::<Vec<_>>(), ["1", "2"]);
        h.set("x-a", "3");
        assert_eq!(
            h.0,
            vec![("Host".into(), "a".into()), ("x-a".into(), "3".into())],
            "the first field takes the new value and the case it was set with"
        );
        h.add("X-B", "4");
        assert!(h.remove("x-b"));
        assert!(!h.remove("x-b"));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn has_token_splits_lists() {
        let h: Headers = [("Connection", "keep-alive, Upgrade")]
            .into_iter()
            .collect();
        assert!(h.has_token("connection", "upgrade"));
        assert!(!h.has_token("connection", "close"));
    }
}
