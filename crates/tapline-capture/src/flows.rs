//! The flow table of one worker: flows by their 5-tuple, which end is the client, and which
//! flows to end for idleness or to make room.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tapline_core::{Flow, FlowStats, Interest, Side, Timestamp};
use tapline_decode::reassembly::TcpReassembler;
use tapline_decode::FlowDecoder;

/// A flow's 5-tuple, the same for both directions (lower endpoint first). Addresses are
/// kept as integers (IPv4 mapped into IPv6) so the key is small and cheap to compare and
/// hash: 40 bytes, a hundred thousand flows are in every worker's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FlowKey {
    low: [u64; 2],
    high: [u64; 2],
    /// Low endpoint's port in the high half, high endpoint's in the low half.
    ports: u32,
    protocol: u8,
}

impl FlowKey {
    pub(crate) fn new(a: SocketAddr, b: SocketAddr, protocol: u8) -> FlowKey {
        let (a, b) = (endpoint(a), endpoint(b));
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            low: low.0,
            high: high.0,
            ports: u32::from(low.1) << 16 | u32::from(high.1),
            protocol,
        }
    }
}

fn endpoint(addr: SocketAddr) -> ([u64; 2], u16) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    ([(ip >> 64) as u64, ip as u64], addr.port())
}

/// Ports that mark the server end of a flow picked up without its handshake.
const SERVER_PORTS: &[u16] = &[
    21, 22, 25, 53, 80, 110, 143, 443, 587, 993, 995, 1433, 1521, 2375, 2376, 3000, 3306, 5000,
    5432, 5672, 6379, 8000, 8008, 8080, 8081, 8443, 8888, 9000, 9042, 9092, 9200, 11211, 27017,
];

/// The client of a flow first seen from `src` to `dst` without a SYN: a well-known server
/// port marks the server; otherwise the lower port is the server's.
pub(crate) fn guess_client(src: SocketAddr, dst: SocketAddr) -> SocketAddr {
    let known = |a: SocketAddr| SERVER_PORTS.contains(&a.port());
    match (known(src), known(dst)) {
        (false, true) => src,
        (true, false) => dst,
        _ if src.port() < dst.port() => dst,
        _ => src,
    }
}

/// TCP state of a live flow.
#[derive(Debug)]
pub(crate) struct TcpState {
    pub reassembler: TcpReassembler,
    /// Created when the first stream bytes arrive; `None` once it went opaque.
    pub decoder: Option<Box<FlowDecoder>>,
    pub decoder_done: bool,
    /// The client's initial sequence number, when its SYN was seen.
    pub client_isn: Option<u32>,
}

/// What is left of a flow.
#[derive(Debug)]
pub(crate) enum FlowState {
    Tcp(Box<TcpState>),
    Udp,
    /// Ended (FIN/RST); kept a while so late packets (the last ACK) do not start a new flow.
    Ended,
}

/// One tracked flow.
#[derive(Debug)]
pub(crate) struct Entry {
    pub flow: Arc<Flow>,
    pub last_seen: Timestamp,
    pub stats: FlowStats,
    /// What the pipeline's stages want for this flow (recomputed when the protocol changes).
    pub interest: Interest,
    pub state: FlowState,
}

impl Entry {
    pub(crate) fn side_of(&self, src: SocketAddr) -> Side {
        if src == self.flow.client {
            Side::Client
        } else {
            Side::Server
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.state, FlowState::Ended)
    }
}

/// The flows of one worker.
pub(crate) type FlowMap = FxHashMap<FlowKey, Entry>;

/// The keys of the `n` flows seen longest ago (ended ones first).
pub(crate) fn oldest(flows: &FlowMap, n: usize) -> Vec<FlowKey> {
    let mut all: Vec<(bool, Timestamp, FlowKey)> = flows
        .iter()
        .map(|(k, e)| (!e.is_ended(), e.last_seen, *k))
        .collect();
    let n = n.min(all.len());
    if n == 0 {
        return Vec::new();
    }
    if n < all.len() {
        all.select_nth_unstable(n - 1);
        all.truncate(n);
    }
    all.into_iter().map(|(_, _, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn key_is_direction_free() {
        let a = addr("10.0.0.1:40000");
        let b = addr("10.0.0.2:80");
        assert_eq!(FlowKey::new(a, b, 6), FlowKey::new(b, a, 6));
        assert_ne!(FlowKey::new(a, b, 6), FlowKey::new(a, b, 17));
    }

    #[test]
    fn client_guess_prefers_known_ports_then_lower_port_as_server() {
        let c = addr("10.0.0.1:40000");
        assert_eq!(guess_client(addr("10.0.0.2:5432"), c), c);
        assert_eq!(guess_client(c, addr("10.0.0.2:5432")), c);
        assert_eq!(guess_client(addr("10.0.0.2:7777"), c), c);
        assert_eq!(
            guess_client(addr("10.0.0.2:5432"), addr("10.0.0.1:80")),
            addr("10.0.0.2:5432")
        );
    }
}
