//! Link layers: where the network layer starts in a captured frame. A few fixed offsets
//! (Ethernet with VLAN tags, BSD loopback, Linux cooked v1/v2, NFLOG's TLVs, PPP and PPPoE,
//! MPLS label stacks) written here because etherparse stops at Ethernet; IEEE 802.11 and its
//! radio headers are in [`super::wifi`].

use super::wifi;

/// The link layers tapline decodes, by their LINKTYPE_ numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1), with 802.1Q / QinQ tags, MPLS and PPPoE sessions.
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
    /// LINKTYPE_IEEE802_11 (105): 802.11 frames without a radio header.
    Ieee80211,
    /// LINKTYPE_IEEE802_11_RADIOTAP (127): 802.11 behind a radiotap header.
    Radiotap,
    /// LINKTYPE_IEEE802_11_PRISM (119): 802.11 behind a Prism (or AVS) header.
    Prism,
    /// LINKTYPE_IEEE802_11_AVS (163): 802.11 behind an AVS header.
    Avs,
    /// LINKTYPE_NFLOG (239): Linux netfilter logging (`iptables -j NFLOG`, `nflog:N`).
    Nflog,
    /// LINKTYPE_PPP (9) and LINKTYPE_PPP_HDLC (50).
    Ppp,
    /// LINKTYPE_PPP_ETHER (51): PPPoE session frames without their Ethernet header.
    PppEther,
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
            105 => LinkType::Ieee80211,
            127 => LinkType::Radiotap,
            119 => LinkType::Prism,
            163 => LinkType::Avs,
            239 => LinkType::Nflog,
            9 | 50 => LinkType::Ppp,
            51 => LinkType::PppEther,
            _ => return None,
        })
    }
}

/// What is under a link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network<'a> {
    /// An IPv4 or IPv6 packet starts here.
    Ip(&'a [u8]),
    /// Something else (ARP, LLDP, 802.11 management or encrypted data, …).
    NotIp,
    /// Too short, or a header that lies about its lengths.
    Malformed,
}

/// Layers of MPLS-in-Ethernet-in-MPLS… followed before giving up.
const MAX_DEPTH: u8 = 8;

/// Strips the link layer of a frame of type `link`.
pub(crate) fn network(link: LinkType, frame: &[u8]) -> Network<'_> {
    match link {
        LinkType::Raw => Network::Ip(frame),
        LinkType::Null | LinkType::Loop => match null_family(link, frame) {
            Some(true) => Network::Ip(&frame[4..]),
            Some(false) => Network::NotIp,
            None => Network::Malformed,
        },
        LinkType::Ethernet => ethernet(frame, 0),
        LinkType::LinuxSll | LinkType::LinuxSll2 => {
            let (proto_at, header) = if link == LinkType::LinuxSll2 {
                (0, 20)
            } else {
                (14, 16)
            };
            match (be16(frame, proto_at), frame.get(header..)) {
                (Some(proto), Some(rest)) => by_ethertype(proto, rest, 0),
                _ => Network::Malformed,
            }
        }
        LinkType::Ieee80211 => wifi::ieee80211(frame),
        LinkType::Radiotap => wifi::radiotap(frame),
        LinkType::Prism => wifi::prism(frame),
        LinkType::Avs => wifi::avs(frame),
        LinkType::Nflog => nflog(frame),
        LinkType::Ppp => ppp(frame, 0),
        LinkType::PppEther => pppoe_session(frame, 0),
    }
}

/// An Ethernet II frame, with up to three 802.1Q / 802.1ad / QinQ tags.
pub(crate) fn ethernet(frame: &[u8], depth: u8) -> Network<'_> {
    let Some(mut ethertype) = be16(frame, 12) else {
        return Network::Malformed;
    };
    let mut at = 14;
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
    match frame.get(at..) {
        Some(rest) => by_ethertype(ethertype, rest, depth),
        None => Network::Malformed,
    }
}

/// What follows an EtherType (Ethernet, Linux cooked, SNAP, GRE, Geneve): IP, an MPLS label
/// stack or a PPPoE session; anything else is not IP.
pub(crate) fn by_ethertype(ethertype: u16, rest: &[u8], depth: u8) -> Network<'_> {
    match ethertype {
        0x0800 | 0x86dd => Network::Ip(rest),
        0x8847 | 0x8848 => mpls(rest, depth),
        0x8864 => pppoe_session(rest, depth),
        _ => Network::NotIp,
    }
}

/// An MPLS label stack: entries up to the bottom-of-stack bit, then IPv4 or IPv6 by the
/// first nibble, or a pseudowire control word (first nibble 0) and an Ethernet frame.
fn mpls(mut rest: &[u8], depth: u8) -> Network<'_> {
    loop {
        let (Some(entry), Some(next)) = (rest.get(..4), rest.get(4..)) else {
            return Network::Malformed;
        };
        rest = next;
        if entry[2] & 1 == 1 {
            break;
        }
    }
    match rest.first().map(|b| b >> 4) {
        Some(4 | 6) => Network::Ip(rest),
        Some(0) if depth < MAX_DEPTH => match rest.get(4..) {
            Some(frame) => ethernet(frame, depth + 1),
            None => Network::Malformed,
        },
        Some(_) => Network::NotIp,
        None => Network::Malformed,
    }
}

/// A PPPoE session frame (RFC 2516): a 6-byte header, then a PPP protocol number.
fn pppoe_session(frame: &[u8], depth: u8) -> Network<'_> {
    match (frame.first(), frame.get(1), frame.get(6..)) {
        (Some(0x11), Some(0x00), Some(ppp_frame)) => ppp_protocol(ppp_frame, depth),
        (Some(_), Some(_), Some(_)) => Network::NotIp,
        _ => Network::Malformed,
    }
}

/// A PPP frame, with or without the HDLC address and control bytes.
pub(crate) fn ppp(frame: &[u8], depth: u8) -> Network<'_> {
    let frame = match frame {
        [0xff, 0x03, rest @ ..] => rest,
        _ => frame,
    };
    ppp_protocol(frame, depth)
}

/// A PPP protocol number (one byte when compressed: odd first byte) and its payload.
fn ppp_protocol(frame: &[u8], depth: u8) -> Network<'_> {
    let (protocol, rest) = match frame {
        [b, rest @ ..] if b & 1 == 1 => (u16::from(*b), rest),
        [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
        _ => return Network::Malformed,
    };
    match protocol {
        0x0021 | 0x0057 => Network::Ip(rest),
        0x0281 | 0x0283 => mpls(rest, depth),
        _ => Network::NotIp,
    }
}

/// NFLOG (LINKTYPE_NFLOG): family, version and resource id, then type-length-value
/// attributes (host byte order, padded to 4 bytes); the packet is attribute 9
/// (NFULA_PAYLOAD).
fn nflog(frame: &[u8]) -> Network<'_> {
    let Some(family) = frame.first() else {
        return Network::Malformed;
    };
    let mut at = 4;
    while let (Some(len), Some(kind)) = (le16(frame, at), le16(frame, at + 2)) {
        let len = usize::from(len);
        if len < 4 {
            return Network::Malformed;
        }
        if kind & 0x3fff == 9 {
            return match frame.get(at + 4..at + len) {
                Some(packet) if matches!(family, 2 | 10) => Network::Ip(packet),
                Some(_) => Network::NotIp,
                None => Network::Malformed,
            };
        }
        at += (len + 3) & !3;
    }
    if at >= frame.len() {
        Network::NotIp
    } else {
        Network::Malformed
    }
}

/// Whether a BSD loopback header says IP: host byte order for NULL (either order is
/// accepted, since captures travel between machines), network order for LOOP.
fn null_family(link: LinkType, frame: &[u8]) -> Option<bool> {
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
    Some(matches!(family, 2 | 10 | 24 | 28 | 30))
}

/// A big-endian u16 at `at`, if the data reaches that far.
pub(crate) fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// A little-endian u16 at `at`, if the data reaches that far.
pub(crate) fn le16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}
