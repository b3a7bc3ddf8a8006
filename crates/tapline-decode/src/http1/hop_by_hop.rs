//! Hop-by-hop header fields (RFC 9110 §7.6.1): meaningful for one connection only, so a proxy
//! leaves them out when it forwards a message, together with every field the `Connection`
//! header names.
//!
//! `Transfer-Encoding` and `Content-Length` are not in this list: they frame the body, which
//! a proxy relays in its own framing, so [`FramingFields`](super::write::FramingFields)
//! decides about them.

/// Fields that are always hop-by-hop (lower case). `Upgrade` is among them: when a client asks
/// to switch protocols the proxy asks the upstream itself;
/// `Proxy-Authorization`/`Proxy-Authenticate` concern this hop.
const ALWAYS: [&[u8]; 7] = [
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"te",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-authenticate",
];

/// The hop-by-hop fields of one message.
pub struct HopByHop<'a> {
    /// The names `Connection` and `Proxy-Connection` list (most messages list none but
    /// `keep-alive` or `close`, so this rarely allocates).
    named: Vec<&'a [u8]>,
}

impl<'a> HopByHop<'a> {
    /// The hop-by-hop fields of a message with `fields`.
    pub fn of(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> HopByHop<'a> {
        let named = fields
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case(b"connection") || n.eq_ignore_ascii_case(b"proxy-connection")
            })
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"close")
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !is_framing(t)
            })
            .collect();
        HopByHop { named }
    }

    /// True when the field `name` stays on this hop.
    pub fn drops(&self, name: &[u8]) -> bool {
        ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(name))
            || self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A connection may not make the body's framing fields hop-by-hop: the body is relayed as
/// framed.
fn is_framing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"content-length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept<'a>(fields: &[(&'a str, &'a str)]) -> Vec<&'a str> {
        let iter = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let hop = HopByHop::of(iter);
        fields
            .iter()
            .filter(|(n, _)| !hop.drops(n.as_bytes()))
            .map(|(n, _)| *n)
            .collect()
    }

    #[test]
    fn removes_fixed_and_connection_named_fields() {
        let names = kept(&[
            ("Host", "example"),
            (
                "Connection",
                "keep-alive, X-Secret , Upgrade, Content-Length",
            ),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "x-other"),
            ("X-Other", "2"),
            ("proxy-authorization", "Basic Zm9v"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ]);
        assert_eq!(
            names,
            ["Host", "transfer-encoding", "content-length", "x-kept"]
        );
    }

    #[test]
    fn garbage_in_connection_is_ignored() {
        assert_eq!(
            kept(&[("connection", "bad name, ,"), ("x-a", "1")]),
            ["x-a"]
        );
    }
}
