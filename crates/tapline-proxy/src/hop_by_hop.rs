//! Hop-by-hop header fields (RFC 9110 §7.6.1): meaningful for one connection only, so a proxy
//! removes them, together with every field the `Connection` header names, before forwarding.

use http::header::{self, HeaderMap, HeaderName};

/// Fields that are always hop-by-hop. `Transfer-Encoding` is among them because the proxy
/// re-frames every body itself; `Proxy-Authorization`/`Proxy-Authenticate` concern this hop.
/// Names are constants so that removing them parses nothing per message.
const ALWAYS: [HeaderName; FIXED] = [
    header::CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];
/// How many fields are always hop-by-hop.
const FIXED: usize = 8;
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes the hop-by-hop fields of `headers`: the fixed list and any field that `Connection`
/// (or the legacy `Proxy-Connection`) names.
pub fn strip(headers: &mut HeaderMap) {
    // One pass of cheap name comparisons notes which fixed fields are there (most messages
    // carry none, many only `Connection: keep-alive`); only those are removed.
    let mut present = [false; FIXED];
    for name in headers.keys() {
        if let Some(i) = ALWAYS.iter().position(|a| a == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // `Connection` and `Proxy-Connection` are the first two.
    if present[0] || present[1] {
        remove_named(headers);
    }
    for (name, there) in ALWAYS.iter().zip(present) {
        if there {
            headers.remove(name);
        }
    }
}

/// Removes the fields that `Connection` and `Proxy-Connection` name, other than the fixed
/// ones (removed anyway) and the `close` option.
fn remove_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = [header::CONNECTION, PROXY_CONNECTION]
        .iter()
        .flat_map(|h| headers.get_all(h))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !is_always(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// True for a name in the fixed list, in any case.
fn is_always(token: &str) -> bool {
    ALWAYS
        .iter()
        .any(|a| a.as_str().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(*n, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn removes_fixed_and_connection_named_fields() {
        let mut h = map(&[
            ("host", "example"),
            ("connection", "keep-alive, X-Secret , Upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "x-other"),
            ("x-other", "2"),
            ("proxy-authorization", "Basic Zm9v"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ]);
        strip(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "x-kept"]);
    }

    #[test]
    fn fields_named_by_connection_go_even_alone() {
        let mut h = map(&[("connection", "x-a"), ("x-a", "1"), ("x-b", "2")]);
        strip(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-b"]);
        let mut clean = map(&[("x-b", "2")]);
        strip(&mut clean);
        assert_eq!(clean.len(), 1);
    }

    #[test]
    fn garbage_in_connection_is_ignored() {
        let mut h = map(&[("connection", "bad name, ,"), ("x-a", "1")]);
        strip(&mut h);
        assert_eq!(h.len(), 1);
    }
}
