//! Checks a `--grpc-plugin` address: `http://HOST:PORT`, nothing else.

use http::Uri;

use crate::error::GrpcError;

/// Parses `url` as a plugin address. Plugins speak plaintext HTTP/2 (as lueur's do), so the
/// scheme must be `http`, with a host and an explicit port and no path.
pub(crate) fn parse(url: &str) -> Result<Uri, GrpcError> {
    let invalid = |reason: &str| GrpcError::InvalidAddress {
        url: url.to_string(),
        reason: format!("{reason} (expected http://HOST:PORT)"),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("TLS to plugins is not supported")),
        Some(other) => return Err(invalid(&format!("unsupported scheme {other:?}"))),
        None => return Err(invalid("no scheme")),
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.host().is_empty() {
        return Err(invalid("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(invalid("credentials are not supported"));
    }
    if authority.port_u16().is_none_or(|p| p == 0) {
        return Err(invalid("no port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("a path is not allowed"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_and_port() {
        for ok in [
            "http://127.0.0.1:50051",
            "http://localhost:1/",
            "http://[::1]:9",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        for (bad, why) in [
            ("127.0.0.1:50051", "scheme"),
            ("https://h:1", "TLS"),
            ("ftp://h:1", "scheme"),
            ("http://h", "port"),
            ("http://h:0", "port"),
            ("http://h:1/x", "path"),
            ("http://u@h:1", "credentials"),
            ("not a url", "URL"),
            ("", "URL"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.starts_with(bad), "{bad}: {err}");
        }
    }
}
