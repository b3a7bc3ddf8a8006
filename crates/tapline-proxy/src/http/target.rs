//! Where a request goes: the forward proxy's absolute-form URL, or an `http` mapping's one
//! upstream; the path sent on, the `Host` it gets and the URL plugins and outputs see.

use std::sync::Arc;

use http::Uri;

/// Where a connection's requests go.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// Forward proxy: wherever each request's absolute URL says.
    Forward,
    /// `http` mapping: always this host and port.
    Fixed {
        /// Host name or IP (IPv6 without brackets).
        host: Arc<str>,
        /// Port.
        port: u16,
        /// `host:port` (IPv6 in brackets): the `Host` of every request.
        authority: Arc<str>,
    },
}

impl Upstream {
    /// The upstream of an `http` mapping to `host:port`; `None` when they make no valid
    /// `Host` value.
    pub(crate) fn fixed(host: &str, port: u16) -> Option<Upstream> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        authority.parse::<http::uri::Authority>().ok()?;
        Some(Upstream::Fixed {
            host: host.into(),
            port,
            authority: authority.into(),
        })
    }

    /// True for an `http` mapping.
    pub(crate) fn is_fixed(&self) -> bool {
        matches!(self, Upstream::Fixed { .. })
    }

    /// Where a request with target `raw` goes; a status and reason for requests this
    /// listener cannot serve.
    pub(crate) fn target(&self, raw: &str) -> Result<Target, (u16, &'static str)> {
        match self {
            Upstream::Fixed {
                host,
                port,
                authority,
            } => {
                let path = if raw.starts_with('/') {
                    raw.to_string()
                } else {
                    let uri: Uri = raw.parse().map_err(|_| (400, "invalid request target"))?;
                    path_of(&uri)
                };
                Ok(Target {
                    host: host.to_string(),
                    port: *port,
                    path,
                    authority: authority.to_string(),
                    fixed: true,
                })
            }
            Upstream::Forward => {
                let uri: Uri = raw.parse().map_err(|_| (400, "invalid request target"))?;
                match uri.scheme_str() {
                    Some(s) if s.eq_ignore_ascii_case("http") => {}
                    Some(_) => {
                        return Err((
                            400,
                            "only http:// URLs are forwarded; HTTPS goes through CONNECT",
                        ))
                    }
                    None => {
                        return Err((
                            400,
                            "this is a forward proxy: send absolute-form requests (curl -x)",
                        ))
                    }
                }
                let Some(authority) = uri.authority() else {
                    return Err((400, "the URL has no host"));
                };
                Ok(Target {
                    host: authority.host().to_string(),
                    port: authority.port_u16().unwrap_or(80),
                    path: path_of(&uri),
                    // `host[:port]` without any `user:pass@`, which is no `Host` value.
                    authority: match authority.port() {
                        Some(port) => format!("{}:{port}", authority.host()),
                        None => authority.host().to_string(),
                    },
                    fixed: false,
                })
            }
        }
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The upstream's host name or address.
    pub(crate) host: String,
    /// Its port.
    pub(crate) port: u16,
    /// The origin-form path sent upstream.
    pub(crate) path: String,
    /// `host:port` as the URL has it: the `Host` when the client sent none.
    pub(crate) authority: String,
    /// True on mappings: `Host` is always the mapping's `authority`.
    pub(crate) fixed: bool,
}

impl Target {
    /// The request's absolute URL (for the messages plugins and outputs see).
    pub(crate) fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// `path?query` of a URI, `/` when it has none.
fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/")
        .to_string()
}

/// True for a path a plugin may set: origin form, no spaces or line breaks.
pub(crate) fn is_origin_form(s: &str) -> bool {
    s.starts_with('/') && s.parse::<http::uri::PathAndQuery>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_targets_come_from_absolute_urls() {
        let t = Upstream::Forward
            .target("http://user:pw@example.test:8080/a?b=1")
            .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.test", 8080, "/a?b=1")
        );
        assert_eq!(
            t.authority, "example.test:8080",
            "credentials never become Host"
        );
        assert_eq!(t.url(), "http://example.test:8080/a?b=1");
        assert_eq!(Upstream::Forward.target("http://h").unwrap().path, "/");
        assert_eq!(Upstream::Forward.target("/a").unwrap_err().0, 400);
        assert_eq!(Upstream::Forward.target("https://h/").unwrap_err().0, 400);
    }

    #[test]
    fn mappings_send_everything_to_their_upstream() {
        let up = Upstream::fixed("::1", 8080).unwrap();
        let t = up.target("/x").unwrap();
        assert_eq!((t.authority.as_str(), t.fixed), ("[::1]:8080", true));
        assert_eq!(up.target("http://elsewhere/y").unwrap().path, "/y");
        assert!(is_origin_form("/a?b") && !is_origin_form("/a b") && !is_origin_form("a"));
    }
}
