//! Where a request goes: the forward proxy's absolute-form URL, an `http`/`https` mapping's
//! one upstream, or an intercepted tunnel's target; the path sent on, the `Host` it gets and
//! the URL plugins and outputs see.

use std::sync::Arc;

use http::Uri;

/// Where a connection's requests go.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// Forward proxy: wherever each request's absolute URL says.
    Forward,
    /// `http` mapping (or intercepted `https` mapping): always this host and port.
    Fixed {
        /// Host name or IP (IPv6 without brackets).
        host: Arc<str>,
        /// Port.
        port: u16,
        /// `host:port` (IPv6 in brackets): the `Host` of every request.
        authority: Arc<str>,
        /// `http` or `https`.
        scheme: &'static str,
    },
    /// An intercepted CONNECT tunnel: its target, with the `Host` the client sends.
    Tunnel {
        /// Host name or IP (IPv6 without brackets).
        host: Arc<str>,
        /// Port.
        port: u16,
        /// `host[:port]` (the port left out when it is 443): the `Host` of requests that
        /// have none, and the URLs' authority.
        authority: Arc<str>,
    },
}

impl Upstream {
    /// The upstream of an `http` mapping (`https` with `tls`) to `host:port`; `None` when
    /// they make no valid `Host` value.
    pub(crate) fn fixed(host: &str, port: u16, tls: bool) -> Option<Upstream> {
        let authority = authority(host, Some(port))?;
        Some(Upstream::Fixed {
            host: host.into(),
            port,
            authority: authority.into(),
            scheme: if tls { "https" } else { "http" },
        })
    }

    /// The upstream of an intercepted tunnel to `host:port`; `None` when they make no valid
    /// `Host` value.
    pub(crate) fn tunnel(host: &str, port: u16) -> Option<Upstream> {
        let authority = authority(host, (port != 443).then_some(port))?;
        Some(Upstream::Tunnel {
            host: host.into(),
            port,
            authority: authority.into(),
        })
    }

    /// True for the forward proxy (the one listener that serves `CONNECT`).
    pub(crate) fn is_forward(&self) -> bool {
        matches!(self, Upstream::Forward)
    }

    /// Where a request with target `raw` goes; a status and reason for requests this
    /// listener cannot serve.
    pub(crate) fn target(&self, raw: &str) -> Result<Target, (u16, &'static str)> {
        match self {
            Upstream::Fixed {
                host,
                port,
                authority,
                scheme,
            } => Ok(Target {
                host: host.to_string(),
                port: *port,
                path: origin_path(raw)?,
                authority: authority.to_string(),
                fixed: true,
                scheme,
            }),
            Upstream::Tunnel {
                host,
                port,
                authority,
            } => Ok(Target {
                host: host.to_string(),
                port: *port,
                path: origin_path(raw)?,
                authority: authority.to_string(),
                fixed: false,
                scheme: "https",
            }),
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
                    scheme: "http",
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
    /// `http`, or `https` for intercepted TLS.
    pub(crate) scheme: &'static str,
}

impl Target {
    /// The request's absolute URL (for the messages plugins and outputs see).
    pub(crate) fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// `host[:port]` (IPv6 in brackets), when it is a valid `Host` value.
fn authority(host: &str, port: Option<u16>) -> Option<String> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    authority.parse::<http::uri::Authority>().ok()?;
    Some(authority)
}

/// The origin-form path of a request target sent to a mapping or tunnel (an absolute-form
/// target is taken for its path).
fn origin_path(raw: &str) -> Result<String, (u16, &'static str)> {
    if raw.starts_with('/') {
        return Ok(raw.to_string());
    }
    let uri: Uri = raw.parse().map_err(|_| (400, "invalid request target"))?;
    Ok(path_of(&uri))
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
        let up = Upstream::fixed("::1", 8080, false).unwrap();
        let t = up.target("/x").unwrap();
        assert_eq!((t.authority.as_str(), t.fixed), ("[::1]:8080", true));
        assert_eq!(up.target("http://elsewhere/y").unwrap().path, "/y");
        assert!(is_origin_form("/a?b") && !is_origin_form("/a b") && !is_origin_form("a"));
        let tls = Upstream::fixed("db.test", 8443, true).unwrap();
        assert_eq!(tls.target("/q").unwrap().url(), "https://db.test:8443/q");
    }

    #[test]
    fn tunnels_keep_the_clients_host_and_say_https() {
        let t = Upstream::tunnel("api.test", 443)
            .unwrap()
            .target("/v1?a=b")
            .unwrap();
        assert_eq!(t.url(), "https://api.test/v1?a=b");
        assert!(!t.fixed);
        let t = Upstream::tunnel("127.0.0.1", 8443)
            .unwrap()
            .target("/")
            .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8443));
        assert_eq!(t.url(), "https://127.0.0.1:8443/");
        assert!(Upstream::tunnel("bad host", 1).is_none());
    }
}
