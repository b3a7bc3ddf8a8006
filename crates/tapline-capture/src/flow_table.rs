//! The flow table of one worker: flows by their 5-tuple, which end is the client, and the
//! table's policy in packet time: idle flows swept (`--flow-timeout`, ended flows lingering
//! to absorb their last ACKs), room made at `--max-flows` (ended flows first, then the
//! longest idle), TCP port reuse (a new SYN with another ISN), stragglers after FIN/RST.
//!
//! The table decides and hands flows back as [`Ending`]s; what a flow holds (`T`) is the
//! caller's, who finishes it and delivers its events. No pipeline, no clock: every time is a
//! packet's [`Timestamp`], passed in.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tapline_core::{FlowEnd, FlowId, Timestamp};
use tapline_decode::packet::tcp_flags;

/// Longest an ended flow is remembered (to absorb its last ACKs) when idle.
const ENDED_LINGER: Duration = Duration::from_secs(30);

/// Longest time between two sweeps for idle flows, in packet time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    /// The key of the flow between `a` and `b` over IP protocol `protocol` (6, 17).
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

    /// Whether `addr` is the key's lower endpoint.
    fn is_low(&self, addr: SocketAddr) -> bool {
        endpoint(addr) == (self.low, (self.ports >> 16) as u16)
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

/// A flow the table decided to start: its ends and its first packet's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opening {
    /// The end that opened the connection (the SYN's sender, else a guess).
    pub client: SocketAddr,
    /// The other end.
    pub server: SocketAddr,
    /// The first packet's time.
    pub started: Timestamp,
    /// The client's initial sequence number, when the first packet is its SYN.
    client_isn: Option<u32>,
}

/// What the table decided about a packet.
#[derive(Debug)]
pub(crate) enum Place<T> {
    /// It belongs to the open flow under its key (now touched).
    Open,
    /// It came after its flow ended (FIN/RST): a loose packet, not a new flow.
    Straggler,
    /// It starts a flow: end `replaced` (the open flow these ports carried until a SYN with
    /// another ISN came), [`FlowTable::make_room`], then [`FlowTable::insert`] the new one.
    Start {
        /// The new flow's ends.
        opening: Opening,
        /// The flow the new one replaces.
        replaced: Option<Ending<T>>,
    },
}

/// A flow the table let go of: the caller finishes it and delivers its `flow_end`.
#[derive(Debug)]
pub(crate) struct Ending<T> {
    /// What the caller kept for the flow.
    pub state: T,
    /// Why it ended.
    pub end: FlowEnd,
    /// When it was last seen: the time of its last events.
    pub at: Timestamp,
}

/// One tracked flow.
#[derive(Debug)]
struct Entry<T> {
    id: FlowId,
    /// Whether the client is the key's lower endpoint.
    client_is_low: bool,
    last_seen: Timestamp,
    /// The client's initial sequence number, when its SYN was seen.
    client_isn: Option<u32>,
    /// The caller's state while the flow is open; `None` once it ended (FIN/RST), kept a
    /// while so late packets (the last ACK) do not start a new flow.
    open: Option<T>,
}

impl<T> Entry<T> {
    fn is_client(&self, key: &FlowKey, src: SocketAddr) -> bool {
        key.is_low(src) == self.client_is_low
    }

    fn ending(&mut self, end: FlowEnd) -> Option<Ending<T>> {
        let state = self.open.take()?;
        Some(Ending {
            state,
            end,
            at: self.last_seen,
        })
    }
}

/// The flows of one worker.
#[derive(Debug)]
pub(crate) struct FlowTable<T> {
    flows: FxHashMap<FlowKey, Entry<T>>,
    flow_timeout: Duration,
    /// Entries (open or ended) kept at most.
    max_flows: usize,
    /// The newest packet time seen.
    now: Timestamp,
    next_sweep: Option<Timestamp>,
}

impl<T> FlowTable<T> {
    /// An empty table that ends flows idle for `flow_timeout` and holds at most `max_flows`.
    pub(crate) fn new(flow_timeout: Duration, max_flows: usize) -> Self {
        FlowTable {
            flows: FxHashMap::default(),
            flow_timeout,
            max_flows: max_flows.max(1),
            now: Timestamp::default(),
            next_sweep: None,
        }
    }

    /// Flows held, ended ones still remembered included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.flows.len()
    }

    /// The state of the open flow under `key`.
    pub(crate) fn open_mut(&mut self, key: &FlowKey) -> Option<&mut T> {
        self.flows.get_mut(key)?.open.as_mut()
    }

    /// Moves the table's clock to `ts` (if later) and, when a sweep is due, forgets ended
    /// flows past their linger and ends the open ones idle for the flow timeout (returned
    /// in id order, as `timeout`).
    pub(crate) fn advance(&mut self, ts: Timestamp) -> Vec<Ending<T>> {
        if ts > self.now {
            self.now = ts;
        }
        match self.next_sweep {
            None => {
                self.next_sweep = Some(self.sweep_after());
                Vec::new()
            }
            Some(due) if self.now >= due => self.sweep(),
            Some(_) => Vec::new(),
        }
    }

    fn sweep_after(&self) -> Timestamp {
        let every = (self.flow_timeout / 2).clamp(Duration::from_millis(1), SWEEP_EVERY);
        Timestamp(self.now.0.saturating_add(every.as_micros() as i64))
    }

    fn sweep(&mut self) -> Vec<Ending<T>> {
        let (now, timeout) = (self.now, self.flow_timeout);
        let linger = timeout.min(ENDED_LINGER);
        self.flows
            .retain(|_, e| e.open.is_some() || now.since(e.last_seen) < linger);
        let mut idle: Vec<(FlowId, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, e)| e.open.is_some() && now.since(e.last_seen) >= timeout)
            .map(|(k, e)| (e.id, *k))
            .collect();
        idle.sort_unstable();
        self.next_sweep = Some(self.sweep_after());
        idle.into_iter()
            .filter_map(|(_, key)| self.remove(&key, FlowEnd::Timeout))
            .collect()
    }

    /// Forgets the flow under `key`, handing it back with `end` if it was open.
    pub(crate) fn remove(&mut self, key: &FlowKey, end: FlowEnd) -> Option<Ending<T>> {
        self.flows.remove(key)?.ending(end)
    }

    /// Where a TCP segment from `src` to `dst` (flags and sequence number as sent) goes.
    /// A packet of an open flow touches it and notes the client's ISN from its SYN.
    pub(crate) fn tcp(
        &mut self,
        key: FlowKey,
        (src, dst): (SocketAddr, SocketAddr),
        flags: u8,
        seq: u32,
        ts: Timestamp,
    ) -> Place<T> {
        let syn_only = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if let Some(e) = self.flows.get_mut(&key) {
            let from_client = e.is_client(&key, src);
            match &e.open {
                None if !syn_only => {
                    // A straggler (the last ACK): the flow is over.
                    e.last_seen = ts;
                    return Place::Straggler;
                }
                // A new connection on the ports of an ended one.
                None => {}
                // The ports were reused: a SYN from the client with another ISN.
                Some(_)
                    if syn_only && from_client && e.client_isn.is_some_and(|isn| isn != seq) => {}
                Some(_) => {
                    e.last_seen = ts;
                    if syn_only && from_client {
                        e.client_isn = Some(seq);
                    }
                    return Place::Open;
                }
            }
        }
        let replaced = self.remove(&key, FlowEnd::Timeout);
        let client = if syn_only {
            src
        } else if flags & tcp_flags::SYN != 0 {
            dst
        } else {
            guess_client(src, dst)
        };
        let opening = Opening {
            client,
            server: if client == src { dst } else { src },
            started: ts,
            client_isn: syn_only.then_some(seq),
        };
        Place::Start { opening, replaced }
    }

    /// Where a UDP datagram from `src` to `dst` goes: its flow (touched), or a new one.
    pub(crate) fn udp(
        &mut self,
        key: FlowKey,
        (src, dst): (SocketAddr, SocketAddr),
        ts: Timestamp,
    ) -> Place<T> {
        if let Some(e) = self.flows.get_mut(&key) {
            e.last_seen = ts;
            return Place::Open;
        }
        let client = guess_client(src, dst);
        let opening = Opening {
            client,
            server: if client == src { dst } else { src },
            started: ts,
            client_isn: None,
        };
        Place::Start {
            opening,
            replaced: None,
        }
    }

    /// Makes room for one more flow when the table is full: forgets a batch of the oldest
    /// entries (a 64th of the limit), ended flows first, then the longest idle open ones,
    /// which are returned (oldest first) to be ended as `timeout` and counted as evicted.
    pub(crate) fn make_room(&mut self) -> Vec<Ending<T>> {
        if self.flows.len() < self.max_flows {
            return Vec::new();
        }
        let n = (self.max_flows / 64).clamp(1, self.flows.len());
        let mut all: Vec<(bool, Timestamp, FlowId, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, e)| (e.open.is_some(), e.last_seen, e.id, *k))
            .collect();
        if n < all.len() {
            all.select_nth_unstable(n - 1);
            all.truncate(n);
        }
        all.sort_unstable();
        all.into_iter()
            .filter_map(|(_, _, _, key)| self.remove(&key, FlowEnd::Timeout))
            .collect()
    }

    /// Starts tracking the flow `id` as `opening` said, with the caller's `state`.
    pub(crate) fn insert(&mut self, key: FlowKey, id: FlowId, opening: Opening, state: T) {
        let entry = Entry {
            id,
            client_is_low: key.is_low(opening.client),
            last_seen: opening.started,
            client_isn: opening.client_isn,
            open: Some(state),
        };
        self.flows.insert(key, entry);
    }

    /// The open flow under `key` ended (FIN/RST): it is handed back, and remembered a while
    /// as ended so its stragglers are not taken for a new flow.
    pub(crate) fn close(&mut self, key: &FlowKey, end: FlowEnd) -> Option<Ending<T>> {
        self.flows.get_mut(key)?.ending(end)
    }

    /// The keys of every open flow, in id order: at the end of the capture they are taken
    /// out one by one with `remove` (only keys are sorted: a sorted copy of
    /// every flow's state would double the memory of a capture ending with many flows open).
    pub(crate) fn open_keys(&self) -> impl Iterator<Item = FlowKey> {
        let mut order: Vec<(FlowId, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, e)| e.open.is_some())
            .map(|(k, e)| (e.id, *k))
            .collect();
        order.sort_unstable_by_key(|(id, _)| *id);
        order.into_iter().map(|(_, key)| key)
    }
}

#[cfg(test)]
mod tests;
