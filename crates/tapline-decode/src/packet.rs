//! Link, network and transport decoding of one captured frame, without copying: the result
//! borrows the frame. The link layer (a few fixed offsets, VLAN tags) is stripped here, which
//! also covers what etherparse lacks (Linux SLL2, BSD loopback); IP, extension headers, TCP
//! and UDP are etherparse's.
//!
//! IPv4 and IPv6 fragments are not reassembled: they are reported as [`Decoded::Fragment`]
//! so the caller can count and skip them.

use std::net::IpAddr;

use etherparse::{EtherType, LaxIpSlice, TcpSlice, UdpSlice};

/// The link layers tapline decodes, by their LINKTYPE_ numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1), with 802.1Q / QinQ tags.
    Ethernet,
    /// LINKTYPE_NULL (0): BSD loopback, a 4-byte host-endian address family.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, the family in network byte order.
    Loop,
    /// LINKTYPE_RAW (101), DLT_RAW (12, 14), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229).
    Raw,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2.
    LinuxSll2,
}

impl LinkType {
    /// The link type for a LINKTYPE_/DLT_ number, `None` when tapline cannot decode it.
    pub fn from_linktype(number: i32) -> Option<LinkType> {
        Some(match number {
            1 => LinkType::Ethernet,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            12 | 14 | 101 | 228 | 229 => LinkType::Raw,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// TCP flag bits as carried in the header's flags byte.
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer is valid.
    pub const URG: u8 = 0x20;
}

/// A decoded TCP header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `flags` has ACK).
    pub ack: u32,
    /// Flags byte (see [`tcp_flags`]).
    pub flags: u8,
    /// The segment's payload as captured (shorter than sent when the snap length cut it).
    pub payload: &'a [u8],
}

/// The transport layer of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A TCP segment.
    Tcp(TcpHeader<'a>),
    /// A UDP datagram.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// The datagram's payload.
        payload: &'a [u8],
    },
    /// ICMP (v4) or ICMPv6: type and code, then the rest.
    Icmp {
        /// ICMPv6 rather than ICMP.
        v6: bool,
        /// The ICMP type.
        icmp_type: u8,
        /// The ICMP code.
        code: u8,
        /// The message after type and code.
        payload: &'a [u8],
    },
    /// Any other IP protocol.
    Other {
        /// The IP protocol number.
        protocol: u8,
        /// The IP payload.
        payload: &'a [u8],
    },
}

impl Transport<'_> {
    /// The name used in packet summaries: `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
    pub fn name(&self) -> String {
        match self {
            Transport::Tcp(_) => "tcp".into(),
            Transport::Udp { .. } => "udp".into(),
            Transport::Icmp { v6: false, .. } => "icmp".into(),
            Transport::Icmp { v6: true, .. } => "icmpv6".into(),
            Transport::Other { protocol, .. } => protocol.to_string(),
        }
    }

    /// The transport payload.
    pub fn payload(&self) -> &[u8] {
        match self {
            Transport::Tcp(t) => t.payload,
            Transport::Udp { payload, .. }
            | Transport::Icmp { payload, .. }
            | Transport::Other { payload, .. } => payload,
        }
    }

    /// Source and destination ports (zero for protocols without ports).
    pub fn ports(&self) -> (u16, u16) {
        match self {
            Transport::Tcp(t) => (t.sport, t.dport),
            Transport::Udp { sport, dport, .. } => (*sport, *dport),
            _ => (0, 0),
        }
    }
}

/// An IP packet's addresses and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// What the IP packet carries.
    pub transport: Transport<'a>,
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// An IP packet (not fragmented) with a decodable transport header.
    Ip(IpPacket<'a>),
    /// An IPv4 or IPv6 fragment (not reassembled: counted and skipped).
    Fragment,
    /// Not IP (ARP, LLDP, other ethertypes).
    NotIp,
    /// Too short, or a header that lies about its lengths.
    Malformed,
}

/// Decodes one frame of link type `link`. Never panics, whatever the bytes.
pub fn decode(link: LinkType, frame: &[u8]) -> Decoded<'_> {
    match network(link, frame) {
        Network::Ip(ip) => from_ip(ip),
        Network::NotIp => Decoded::NotIp,
        Network::Malformed => Decoded::Malformed,
    }
}

/// What is under the link layer.
enum Network<'a> {
    /// An IPv4 or IPv6 packet starts here.
    Ip(&'a [u8]),
    NotIp,
    Malformed,
}

/// Strips the link layer (Ethernet with up to three VLAN tags, BSD loopback, Linux cooked).
fn network(link: LinkType, frame: &[u8]) -> Network<'_> {
    let (ethertype, at) = match link {
        LinkType::Raw => return Network::Ip(frame),
        LinkType::Null | LinkType::Loop => {
            return match null_family(link, frame) {
                Some(Family::Ip) => Network::Ip(&frame[4..]),
                Some(Family::Other) => Network::NotIp,
                None => Network::Malformed,
            }
        }
        LinkType::Ethernet => {
            let Some(mut ethertype) = be16(frame, 12) else {
                return Network::Malformed;
            };
            let mut at = 14;
            // 802.1Q, 802.1ad and the older QinQ tag, up to three deep.
            for _ in 0..3 {
                if !matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                    break;
                }
                let Some(inner) = be16(frame, at + 2) else {
                    return Network::Malformed;
                };
                ethertype = inner;
                at += 4;
            }
            (ethertype, at)
        }
        LinkType::LinuxSll | LinkType::LinuxSll2 => {
            let (proto_at, header) = sll_layout(link);
            let Some(proto) = be16(frame, proto_at) else {
                return Network::Malformed;
            };
            (proto, header)
        }
    };
    match (EtherType(ethertype), frame.get(at..)) {
        (EtherType::IPV4 | EtherType::IPV6, Some(ip)) => Network::Ip(ip),
        (EtherType::IPV4 | EtherType::IPV6, None) => Network::Malformed,
        _ => Network::NotIp,
    }
}

fn from_ip(data: &[u8]) -> Decoded<'_> {
    let Ok((ip, _)) = LaxIpSlice::from_slice(data) else {
        return Decoded::Malformed;
    };
    let payload = ip.payload();
    if payload.fragmented {
        return Decoded::Fragment;
    }
    let body = payload.payload;
    let transport = match payload.ip_number.0 {
        6 => match TcpSlice::from_slice(body) {
            Ok(t) => Transport::Tcp(TcpHeader {
                sport: t.source_port(),
                dport: t.destination_port(),
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                flags: t.header_slice().get(13).copied().unwrap_or(0),
                payload: t.payload(),
            }),
            // Cut short, or a data offset below 5 words or past the end.
            Err(_) => return Decoded::Malformed,
        },
        17 => match UdpSlice::from_slice_lax(body) {
            Ok(u) => Transport::Udp {
                sport: u.source_port(),
                dport: u.destination_port(),
                payload: u.payload(),
            },
            Err(_) => return Decoded::Malformed,
        },
        number @ (1 | 58) => Transport::Icmp {
            v6: number == 58,
            icmp_type: body.first().copied().unwrap_or(0),
            code: body.get(1).copied().unwrap_or(0),
            payload: body.get(2..).unwrap_or(&[]),
        },
        protocol => Transport::Other {
            protocol,
            payload: body,
        },
    };
    Decoded::Ip(IpPacket {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        transport,
    })
}

enum Family {
    Ip,
    Other,
}

/// The address family of a BSD loopback header: host byte order for NULL (either order is
/// accepted, since captures travel between machines), network order for LOOP.
fn null_family(link: LinkType, frame: &[u8]) -> Option<Family> {
    let bytes: [u8; 4] = frame.get(..4)?.try_into().ok()?;
    let family = match link {
        LinkType::Loop => u32::from_be_bytes(bytes),
        _ => {
            let le = u32::from_le_bytes(bytes);
            if le <= 0xffff {
                le
            } else {
                u32::from_be_bytes(bytes)
            }
        }
    };
    // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD/OpenBSD), 28 (FreeBSD),
    // 30 (macOS).
    Some(match family {
        2 | 10 | 24 | 28 | 30 => Family::Ip,
        _ => Family::Other,
    })
}

/// Where the protocol field sits and how long the header is, for SLL and SLL2.
fn sll_layout(link: LinkType) -> (usize, usize) {
    if link == LinkType::LinuxSll2 {
        (0, 20)
    } else {
        (14, 16)
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// A hash of the frame's addresses and ports that is the same in both directions, so that
/// every packet of a flow goes to the same worker. A light walk (no full decode): frames
/// it cannot read hash to 0.
pub fn flow_hash(link: LinkType, frame: &[u8]) -> u64 {
    flow_hash_inner(link, frame).unwrap_or(0)
}

fn flow_hash_inner(link: LinkType, frame: &[u8]) -> Option<u64> {
    let Network::Ip(ip) = network(link, frame) else {
        return None;
    };
    let (a, b, proto, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let frag = be16(ip, 6)? & 0x3fff;
            let a = u64::from(u32::from_be_bytes(ip.get(12..16)?.try_into().ok()?));
            let b = u64::from(u32::from_be_bytes(ip.get(16..20)?.try_into().ok()?));
            let l4 = if frag == 0 { ip.get(ihl..) } else { None };
            (a, b, *ip.get(9)?, l4)
        }
        6 => {
            let a = fold16(ip.get(8..24)?);
            let b = fold16(ip.get(24..40)?);
            let (proto, l4) = skip_ipv6_extensions(*ip.get(6)?, ip.get(40..)?);
            (a, b, proto, l4)
        }
        _ => return None,
    };
    let (pa, pb) = match (proto, l4) {
        (6 | 17, Some(l4)) => (u64::from(be16(l4, 0)?), u64::from(be16(l4, 2)?)),
        _ => (0, 0),
    };
    let x = (a << 16) ^ pa;
    let y = (b << 16) ^ pb;
    let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
    Some(mix(lo ^ mix(hi ^ u64::from(proto))))
}

/// Follows IPv6 extension headers to the transport header; `None` for fragments.
fn skip_ipv6_extensions(mut next: u8, mut rest: &[u8]) -> (u8, Option<&[u8]>) {
    for _ in 0..8 {
        let len = match next {
            0 | 43 | 60 => {
                (usize::from(match rest.get(1) {
                    Some(l) => *l,
                    None => return (next, None),
                }) + 1)
                    * 8
            }
            51 => {
                (usize::from(match rest.get(1) {
                    Some(l) => *l,
                    None => return (next, None),
                }) + 2)
                    * 4
            }
            44 => return (next, None),
            _ => return (next, Some(rest)),
        };
        let (Some(n), Some(r)) = (rest.first(), rest.get(len..)) else {
            return (next, None);
        };
        next = *n;
        rest = r;
    }
    (next, None)
}

fn fold16(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0u64, |acc, c| {
        let mut word = [0u8; 8];
        word[..c.len()].copy_from_slice(c);
        mix(acc ^ u64::from_le_bytes(word))
    })
}

/// A 64-bit finaliser (splitmix64's): spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 65535)
            .syn();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn decodes_ethernet_ipv4_tcp() {
        let frame = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"hello");
        let Decoded::Ip(ip) = decode(LinkType::Ethernet, &frame) else {
            panic!("not decoded");
        };
        assert_eq!(ip.src.to_string(), "10.0.0.1");
        let Transport::Tcp(t) = ip.transport else {
            panic!("not tcp")
        };
        assert_eq!((t.sport, t.dport, t.seq), (1234, 80, 1000));
        assert_eq!(t.flags & tcp_flags::SYN, tcp_flags::SYN);
        assert_eq!(t.payload, b"hello");
    }

    #[test]
    fn decodes_qinq_sll_sll2_and_null() {
        let eth = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"x");
        let ip = &eth[14..];
        // QinQ: outer 802.1ad, inner 802.1Q.
        let mut qinq = eth[..12].to_vec();
        qinq.extend_from_slice(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
        qinq.extend_from_slice(ip);
        let mut sll = vec![0, 0, 3, 4, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 3, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0,
        ];
        sll2.extend_from_slice(ip);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        for (link, frame) in [
            (LinkType::Ethernet, &qinq),
            (LinkType::LinuxSll, &sll),
            (LinkType::LinuxSll2, &sll2),
            (LinkType::Null, &null),
            (LinkType::Raw, &ip.to_vec()),
        ] {
            let Decoded::Ip(p) = decode(link, frame) else {
                panic!("{link:?} not decoded");
            };
            assert_eq!(p.transport.payload(), b"x", "{link:?}");
            assert_eq!(flow_hash(link, frame), flow_hash(LinkType::Ethernet, &eth));
        }
    }

    #[test]
    fn hash_is_symmetric_and_spreads() {
        let ab = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"");
        let ba = tcp_frame([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, b"");
        let other = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1235, 80, b"");
        assert_eq!(
            flow_hash(LinkType::Ethernet, &ab),
            flow_hash(LinkType::Ethernet, &ba)
        );
        assert_ne!(
            flow_hash(LinkType::Ethernet, &ab),
            flow_hash(LinkType::Ethernet, &other)
        );
    }

    #[test]
    fn bad_tcp_data_offset_is_malformed_not_a_panic() {
        let mut frame = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"abc");
        frame[14 + 20 + 12] = 0x00; // data offset 0
        assert_eq!(decode(LinkType::Ethernet, &frame), Decoded::Malformed);
        for cut in 0..frame.len() {
            let _ = decode(LinkType::Ethernet, &frame[..cut]);
            let _ = flow_hash(LinkType::Ethernet, &frame[..cut]);
        }
    }

    #[test]
    fn fragments_are_reported() {
        let mut frame = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"abc");
        frame[14 + 6] = 0x20; // more fragments
        assert_eq!(decode(LinkType::Ethernet, &frame), Decoded::Fragment);
    }
}
