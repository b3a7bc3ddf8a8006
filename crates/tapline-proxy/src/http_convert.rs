//! Between hyper's message types and the ordered, string-typed messages plugins see.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{request, response, StatusCode, Version};
use tapline_core::{Headers, HttpRequest, HttpResponse};

use crate::body::{self, ProxyBody};

/// `HTTP/1.1`, `HTTP/1.0`, …
pub(crate) fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The fields of `map`, in its order (fields of one name together), names in lower case.
pub(crate) fn headers_from_map(map: &HeaderMap) -> Headers {
    Headers(
        map.iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    )
}

/// `headers` as a header map; fields a plugin made invalid are dropped with a warning.
pub(crate) fn map_from_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => tracing::warn!("dropping invalid header field {name:?} set by a plugin"),
        }
    }
    map
}

/// The request as plugins see it, before its body is known.
pub(crate) fn request_view(parts: &request::Parts, url: String) -> HttpRequest {
    let mut headers = headers_from_map(&parts.headers);
    if headers.get("host").is_none() {
        if let Some(authority) = parts.uri.authority() {
            headers.0.insert(0, ("host".into(), authority.to_string()));
        }
    }
    HttpRequest {
        method: parts.method.as_str().to_string(),
        path: origin_form(&parts.uri),
        url: Some(url),
        version: version_str(parts.version).to_string(),
        headers,
        body: Bytes::new(),
        body_truncated: false,
        body_len: content_length(&parts.headers).unwrap_or(0),
    }
}

/// The response as plugins see it, before its body is known.
pub(crate) fn response_view(parts: &response::Parts) -> HttpResponse {
    HttpResponse {
        status: parts.status.as_u16(),
        reason: parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .to_string(),
        version: version_str(parts.version).to_string(),
        headers: headers_from_map(&parts.headers),
        body_len: content_length(&parts.headers).unwrap_or(0),
        ..Default::default()
    }
}

/// `path?query` of a URI, `/` when it has none.
pub(crate) fn origin_form(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// The declared `Content-Length`, when there is one valid value.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sets `Content-Length` for a body that replaced the original (framing stays right).
pub(crate) fn set_content_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

/// A whole response built from a plugin's (or the proxy's own) [`HttpResponse`].
pub(crate) fn response_from(resp: &HttpResponse) -> http::Response<ProxyBody> {
    let mut headers = map_from_headers(&resp.headers);
    crate::hop_by_hop::strip(&mut headers);
    set_content_length(&mut headers, resp.body.len());
    let mut out = http::Response::new(body::full(resp.body.clone()));
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *out.headers_mut() = headers;
    out
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

    #[test]
    fn request_view_keeps_order_and_adds_host() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://example.test:8080/a/b?x=1")
            .header("X-One", "1")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let view = request_view(&parts, "http://example.test:8080/a/b?x=1".into());
        assert_eq!(view.path, "/a/b?x=1");
        assert_eq!(view.method, "POST");
        assert_eq!(view.body_len, 5);
        assert_eq!(
            view.headers.0,
            vec![
                ("host".to_string(), "example.test:8080".to_string()),
                ("x-one".into(), "1".into()),
                ("content-length".into(), "5".into())
            ]
        );
    }

    #[test]
    fn built_responses_are_framed_by_their_body() {
        let mut r = short_response(502, "upstream down");
        r.headers.add("Transfer-Encoding", "chunked");
        r.headers.add("Content-Length", "999");
        let resp = response_from(&r);
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["content-length"], "14");
        assert!(resp.headers().get("transfer-encoding").is_none());
    }

    #[test]
    fn invalid_plugin_headers_are_dropped() {
        let h = Headers(vec![
            ("ok".into(), "1".into()),
            ("bad name".into(), "2".into()),
            ("x".into(), "bad\nvalue".into()),
        ]);
        assert_eq!(map_from_headers(&h).len(), 1);
    }
}
