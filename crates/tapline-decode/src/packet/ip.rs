//! A light look at an IP header (no copy, no checksum): the addresses, the protocol, whether
//! it is a fragment, and the payload. Enough to hash a flow, find a tunnel or a fragment;
//! the full decode of the innermost packet is etherparse's.

use super::link::be16;

/// What the light look saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpView<'a> {
    /// Source address bytes (4 or 16).
    pub src: &'a [u8],
    /// Destination address bytes (4 or 16).
    pub dst: &'a [u8],
    /// The transport protocol (after IPv6 extension headers; 44 for an IPv6 fragment).
    pub proto: u8,
    /// An IPv4 fragment (more fragments or an offset) or an IPv6 fragment header.
    pub fragment: bool,
    /// What follows the headers, bounded by the header's length field.
    pub payload: &'a [u8],
}

/// Looks at an IPv4 or IPv6 header; `None` when it is cut short or lies about its lengths.
pub(crate) fn view(ip: &[u8]) -> Option<IpView<'_>> {
    match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            if ihl < 20 || total < ihl {
                return None;
            }
            Some(IpView {
                src: ip.get(12..16)?,
                dst: ip.get(16..20)?,
                proto: *ip.get(9)?,
                fragment: be16(ip, 6)? & 0x3fff != 0,
                payload: ip.get(ihl..total.min(ip.len()))?,
            })
        }
        6 => {
            let len = match usize::from(be16(ip, 4)?) {
                0 => ip.len(), // a jumbogram: the length is in a hop-by-hop option
                n => (40 + n).min(ip.len()),
            };
            let (proto, payload) = skip_extensions(*ip.get(6)?, ip.get(40..len)?)?;
            Some(IpView {
                src: ip.get(8..24)?,
                dst: ip.get(24..40)?,
                proto,
                fragment: proto == 44,
                payload,
            })
        }
        _ => None,
    }
}

/// Follows IPv6 extension headers (hop-by-hop, routing, destination options,
/// authentication) to the transport header, or stops at a fragment header (44).
pub(crate) fn skip_extensions(mut next: u8, mut rest: &[u8]) -> Option<(u8, &[u8])> {
    for _ in 0..8 {
        let len = match next {
            0 | 43 | 60 => (usize::from(*rest.get(1)?) + 1) * 8,
            51 => (usize::from(*rest.get(1)?) + 2) * 4,
            _ => return Some((next, rest)),
        };
        next = *rest.first()?;
        rest = rest.get(len..)?;
    }
    None
}
