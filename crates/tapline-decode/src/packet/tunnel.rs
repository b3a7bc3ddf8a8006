//! Encapsulations inside IP, whose inner packet becomes the packet: IP-in-IP (4in4, 6in4,
//! 4in6, 6in6), GRE (IP, transparent Ethernet bridging, MPLS, ERSPAN types I–III, PPTP's
//! enhanced GRE carrying PPP), VXLAN (UDP 4789) and Geneve (UDP 6081). A UDP datagram on
//! those ports whose header does not look right stays a UDP datagram.

use super::ip::IpView;
use super::link::{be16, by_ethertype, ethernet, ppp, Network};

/// The packet `ip` carries when it is a tunnel; `None` when it is not one (or a fragment:
/// the tunnel is found again once the datagram is reassembled).
pub(crate) fn inner<'a>(ip: &IpView<'a>) -> Option<Network<'a>> {
    if ip.fragment {
        return None;
    }
    match ip.proto {
        4 | 41 => Some(Network::Ip(ip.payload)),
        47 => gre(ip.payload),
        17 => udp(ip.payload),
        _ => None,
    }
}

/// A GRE header (RFC 2784/2890: optional checksum, key and sequence number), or PPTP's
/// enhanced GRE (version 1: key always, sequence and acknowledgment numbers optional).
fn gre(p: &[u8]) -> Option<Network<'_>> {
    let flags = be16(p, 0)?;
    let protocol = be16(p, 2)?;
    let bit = |mask: u16| if flags & mask != 0 { 4 } else { 0 };
    match flags & 7 {
        0 if flags & 0x4000 == 0 => {
            // Checksum (C), key (K), sequence number (S); source routing (R) is obsolete.
            let at = 4 + bit(0x8000) + bit(0x2000) + bit(0x1000);
            let rest = p.get(at..)?;
            Some(match protocol {
                0x6558 => ethernet(rest, 0),
                // ERSPAN type II carries a sequence number and an 8-byte header; type I
                // neither.
                0x88be if flags & 0x1000 != 0 => ethernet(rest.get(8..)?, 0),
                0x88be => ethernet(rest, 0),
                0x22eb => erspan3(rest)?,
                other => by_ethertype(other, rest, 0),
            })
        }
        1 if protocol == 0x880b => {
            let at = 8 + bit(0x1000) + if flags & 0x0080 != 0 { 4 } else { 0 };
            Some(ppp(p.get(at..)?, 0))
        }
        _ => None,
    }
}

/// ERSPAN type III: a 12-byte header, an 8-byte platform-specific subheader when its O
/// bit is set, then an Ethernet frame (frame type 0) or an IP packet (frame type 2).
fn erspan3(p: &[u8]) -> Option<Network<'_>> {
    let (b10, b11) = (*p.get(10)?, *p.get(11)?);
    let at = 12 + if b11 & 1 != 0 { 8 } else { 0 };
    let rest = p.get(at..)?;
    Some(match (b10 >> 2) & 0x1f {
        0 => ethernet(rest, 0),
        2 => Network::Ip(rest),
        _ => Network::NotIp,
    })
}

/// VXLAN and Geneve, on their IANA ports.
fn udp(p: &[u8]) -> Option<Network<'_>> {
    let body = p.get(8..)?;
    match be16(p, 2)? {
        // VXLAN: flags with the I bit (a valid VNI), reserved bits, VNI, reserved.
        4789 if body.first()? & 0x08 != 0 => Some(ethernet(body.get(8..)?, 0)),
        // Geneve: version 0, options length in 4-byte words, a protocol EtherType.
        6081 if body.first()? >> 6 == 0 => {
            let at = 8 + usize::from(body[0] & 0x3f) * 4;
            let rest = body.get(at..)?;
            Some(match be16(body, 2)? {
                0x6558 => ethernet(rest, 0),
                other => by_ethertype(other, rest, 0),
            })
        }
        _ => None,
    }
}
