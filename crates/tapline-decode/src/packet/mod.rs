//! Link, network and transport decoding of one captured frame, without copying: the result
//! borrows the frame. Link layers (`link`, `wifi`) and tunnels (`tunnel`: IP-in-IP, GRE,
//! ERSPAN, VXLAN, Geneve) are peeled here, since etherparse stops at Ethernet and IP; the
//! innermost IP header, its extension headers, TCP and UDP are etherparse's. `hash` steers a
//! frame to the worker that owns its (inner) flow.
//!
//! IPv4 and IPv6 fragments are reported as [`Decoded::Fragment`]; the capture reassembles
//! them (`crate::defrag`) before they reach the flows.

use std::net::IpAddr;

use etherparse::{LaxIpSlice, TcpSlice, UdpSlice};

mod hash;
mod ip;
mod link;
mod tunnel;
mod wifi;

pub use hash::{flow_hash, steer, Steer};
pub use link::LinkType;

use ip::IpView;
use link::Network;

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

/// Decodes one frame of link type `link`, through its tunnels. Never panics, whatever the
/// bytes.
pub fn decode(link: LinkType, frame: &[u8]) -> Decoded<'_> {
    match innermost(link, frame) {
        Innermost::Ip(_, ip) => from_ip(ip),
        Innermost::Fragment(_) => Decoded::Fragment,
        Innermost::NotIp => Decoded::NotIp,
        Innermost::Malformed => Decoded::Malformed,
    }
}

/// Tunnels inside tunnels followed before the packet is taken as it is.
const MAX_NESTING: usize = 8;

/// The innermost IP packet of a frame, after its link layer and tunnels.
pub(crate) enum Innermost<'a> {
    /// An IP packet (its light view, and its bytes).
    Ip(IpView<'a>, &'a [u8]),
    /// An IP fragment (its bytes, from the IP header on).
    Fragment(&'a [u8]),
    NotIp,
    Malformed,
}

pub(crate) fn innermost(link: LinkType, frame: &[u8]) -> Innermost<'_> {
    let mut network = link::network(link, frame);
    for _ in 0..MAX_NESTING {
        let bytes = match network {
            Network::Ip(bytes) => bytes,
            Network::NotIp => return Innermost::NotIp,
            Network::Malformed => return Innermost::Malformed,
        };
        let Some(view) = ip::view(bytes) else {
            return Innermost::Malformed;
        };
        if view.fragment {
            return Innermost::Fragment(bytes);
        }
        match tunnel::inner(&view) {
            Some(inner) => network = inner,
            None => return Innermost::Ip(view, bytes),
        }
    }
    Innermost::Malformed
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

#[cfg(test)]
mod tests;
