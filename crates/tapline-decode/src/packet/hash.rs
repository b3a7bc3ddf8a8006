//! Steering: which worker a frame goes to. The hash covers the innermost flow's addresses
//! and ports and is the same in both directions, so every packet of a flow (tunnelled or
//! not) reaches one worker; a fragment is handed back to be reassembled first, since only
//! the whole datagram has the ports.

use super::ip::IpView;
use super::{innermost, Innermost, LinkType};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer<'a> {
    /// To the worker chosen by this flow hash (0 for frames that are not IP).
    Flow(u64),
    /// An IP fragment (its bytes, from the IP header on): reassemble before steering.
    Fragment(&'a [u8]),
}

/// Where `frame` goes: its flow hash, or the fragment it is.
pub fn steer(link: LinkType, frame: &[u8]) -> Steer<'_> {
    match innermost(link, frame) {
        Innermost::Ip(view, _) => Steer::Flow(hash(&view)),
        Innermost::Fragment(ip) => Steer::Fragment(ip),
        Innermost::NotIp | Innermost::Malformed => Steer::Flow(0),
    }
}

/// A hash of the frame's (innermost) addresses and ports that is the same in both
/// directions; 0 for frames it cannot read, and for fragments.
pub fn flow_hash(link: LinkType, frame: &[u8]) -> u64 {
    match steer(link, frame) {
        Steer::Flow(hash) => hash,
        Steer::Fragment(_) => 0,
    }
}

fn hash(ip: &IpView<'_>) -> u64 {
    let (a, b) = (fold(ip.src), fold(ip.dst));
    let (pa, pb) = match (ip.proto, ip.payload.get(..4)) {
        (6 | 17, Some(ports)) => (
            u64::from(u16::from_be_bytes([ports[0], ports[1]])),
            u64::from(u16::from_be_bytes([ports[2], ports[3]])),
        ),
        _ => (0, 0),
    };
    let x = (a << 16) ^ pa;
    let y = (b << 16) ^ pb;
    let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
    mix(lo ^ mix(hi ^ u64::from(ip.proto)))
}

/// An address as one number: IPv4's four bytes as they are, IPv6's folded.
fn fold(address: &[u8]) -> u64 {
    if let Ok(v4) = <[u8; 4]>::try_from(address) {
        return u64::from(u32::from_be_bytes(v4));
    }
    address.chunks(8).fold(0u64, |acc, c| {
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
