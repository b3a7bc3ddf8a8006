//! IPv4 and IPv6 fragment reassembly, bounded: a datagram may not pass 65,535 bytes, all
//! datagrams in progress together may not pass a byte budget (the oldest go first), and a
//! datagram not completed within the timeout (packet time) is dropped. Overlapping
//! fragments are resolved as TCP reassembly does: the bytes that arrived first win.
//! Datagrams are keyed by addresses and identification (and protocol for IPv4), as the
//! receiving host would (RFC 791, RFC 8200).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tapline_core::Timestamp;

/// The largest datagram reassembled (IPv4's total length limit; IPv6 jumbograms are not
/// fragmented).
const MAX_DATAGRAM: usize = 65_535;

/// Limits of a [`Defragmenter`].
#[derive(Debug, Clone, Copy)]
pub struct DefragLimits {
    /// Bytes of all datagrams in progress together.
    pub max_bytes: usize,
    /// How long (packet time) a datagram may take to complete.
    pub timeout: Duration,
}

impl Default for DefragLimits {
    /// 16 MiB, 30 seconds (Linux's `ipfrag_time`).
    fn default() -> Self {
        DefragLimits {
            max_bytes: 16 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What reassembly did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragCounters {
    /// Fragments taken in.
    pub fragments: u64,
    /// Datagrams completed and handed on.
    pub reassembled: u64,
    /// Datagrams dropped because they did not complete in time.
    pub timed_out: u64,
    /// Datagrams dropped at a limit (over 65,535 bytes, or the oldest when the byte budget
    /// was reached).
    pub limit_dropped: u64,
    /// Fragment bytes ignored because earlier fragments had already covered them.
    pub overlap_bytes: u64,
    /// Fragments whose headers could not be read.
    pub malformed: u64,
}

impl DefragCounters {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DefragCounters) {
        self.fragments += other.fragments;
        self.reassembled += other.reassembled;
        self.timed_out += other.timed_out;
        self.limit_dropped += other.limit_dropped;
        self.overlap_bytes += other.overlap_bytes;
        self.malformed += other.malformed;
    }
}

/// Reassembles fragmented IP datagrams.
#[derive(Debug, Default)]
pub struct Defragmenter {
    limits: DefragLimits,
    pending: HashMap<Key, Pending>,
    /// Datagrams by start time, oldest first (entries of completed datagrams are stale).
    order: VecDeque<(Timestamp, Key)>,
    bytes: usize,
    /// What was done so far.
    pub counters: DefragCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    /// IPv4's protocol, or 0xff00 + 6 for IPv6 (whose key has no protocol).
    proto: u16,
}

#[derive(Debug)]
struct Pending {
    started: Timestamp,
    /// The first fragment's headers (IPv4 header; IPv6 header and the extension headers
    /// before the fragment header), once it arrived.
    header: Option<Header>,
    /// Non-overlapping pieces, sorted by offset.
    parts: Vec<(usize, Vec<u8>)>,
    /// The datagram's payload length, once the last fragment arrived.
    total: Option<usize>,
    bytes: usize,
}

#[derive(Debug)]
struct Header {
    bytes: Vec<u8>,
    /// IPv6: where the next-header field pointing at the fragment header is, and what the
    /// fragment header said comes next.
    v6_next: Option<(usize, u8)>,
}

/// One fragment, read.
struct Fragment<'a> {
    key: Key,
    header: &'a [u8],
    v6_next: Option<(usize, u8)>,
    offset: usize,
    more: bool,
    data: &'a [u8],
}

impl Defragmenter {
    /// A reassembler with these limits.
    pub fn new(limits: DefragLimits) -> Self {
        Defragmenter {
            limits,
            ..Default::default()
        }
    }

    /// Datagrams in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes held for datagrams in progress (headers and fragment data).
    pub fn buffered(&self) -> usize {
        self.bytes
    }

    /// Takes one fragment (`ip`: from its IP header on) seen at `ts`; returns the whole
    /// datagram, as an unfragmented IP packet, when this fragment completed it.
    pub fn push(&mut self, ts: Timestamp, ip: &[u8]) -> Option<Vec<u8>> {
        self.expire(ts);
        self.counters.fragments += 1;
        let Some(f) = read(ip) else {
            self.counters.malformed += 1;
            return None;
        };
        if f.offset + f.data.len() > MAX_DATAGRAM {
            self.counters.limit_dropped += 1;
            self.forget(&f.key);
            return None;
        }
        if f.offset == 0 && !f.more && !self.pending.contains_key(&f.key) {
            // An atomic fragment (IPv6) or a datagram in one piece.
            self.counters.reassembled += 1;
            return Some(build(&header_of(&f), f.data));
        }
        let entry = self.pending.entry(f.key).or_insert_with(|| {
            self.order.push_back((ts, f.key));
            Pending {
                started: ts,
                header: None,
                parts: Vec::new(),
                total: None,
                bytes: 0,
            }
        });
        let before = entry.bytes;
        if !f.more && entry.total.is_none() {
            entry.total = Some(f.offset + f.data.len());
        }
        if f.offset == 0 && entry.header.is_none() {
            entry.header = Some(header_of(&f));
            entry.bytes += f.header.len();
        }
        let end = entry
            .total
            .map_or(f.offset + f.data.len(), |t| t.min(f.offset + f.data.len()));
        let data = f.data.get(..end.saturating_sub(f.offset)).unwrap_or(&[]);
        let (added, overlap) = insert(&mut entry.parts, f.offset, data);
        entry.bytes += added;
        self.counters.overlap_bytes += overlap as u64;
        self.bytes += entry.bytes - before;
        if let Some(datagram) = complete(entry) {
            self.forget(&f.key);
            self.counters.reassembled += 1;
            return Some(datagram);
        }
        self.within_budget(&f.key);
        None
    }

    /// Drops datagrams that did not complete within the timeout of `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(&(started, key)) = self.order.front() {
            if now.since(started) < self.limits.timeout {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&key).is_some_and(|p| p.started == started) {
                self.forget(&key);
                self.counters.timed_out += 1;
            }
        }
    }

    /// Drops the oldest datagrams until the budget holds (`current` last of all).
    fn within_budget(&mut self, current: &Key) {
        while self.bytes > self.limits.max_bytes {
            let victim = loop {
                match self.order.pop_front() {
                    Some((started, key)) => {
                        if self.pending.get(&key).is_some_and(|p| p.started == started) {
                            break Some(key);
                        }
                    }
                    None => break None,
                }
            };
            let key = victim.unwrap_or(*current);
            self.forget(&key);
            self.counters.limit_dropped += 1;
            if victim.is_none() {
                return;
            }
        }
    }

    fn forget(&mut self, key: &Key) {
        if let Some(p) = self.pending.remove(key) {
            self.bytes -= p.bytes;
        }
    }
}

fn header_of(f: &Fragment<'_>) -> Header {
    Header {
        bytes: f.header.to_vec(),
        v6_next: f.v6_next,
    }
}

/// Adds `data` at `start` where nothing is yet (first wins); returns the bytes added and
/// the bytes ignored as overlapping.
fn insert(parts: &mut Vec<(usize, Vec<u8>)>, start: usize, data: &[u8]) -> (usize, usize) {
    let end = start + data.len();
    let mut pieces = Vec::new();
    let mut cursor = start;
    for (s, d) in parts.iter() {
        let e = s + d.len();
        if e <= cursor {
            continue;
        }
        if *s >= end {
            break;
        }
        if *s > cursor {
            pieces.push((cursor, data[cursor - start..s - start].to_vec()));
        }
        cursor = cursor.max(e);
    }
    if cursor < end {
        pieces.push((cursor, data[cursor - start..].to_vec()));
    }
    let added: usize = pieces.iter().map(|(_, d)| d.len()).sum();
    for piece in pieces {
        let at = parts.partition_point(|(s, _)| *s < piece.0);
        parts.insert(at, piece);
    }
    (added, data.len() - added)
}

/// The whole datagram, if every byte up to the last fragment's end is there.
fn complete(p: &Pending) -> Option<Vec<u8>> {
    let (total, header) = (p.total?, p.header.as_ref()?);
    let mut cursor = 0;
    for (s, d) in &p.parts {
        if *s > cursor {
            return None;
        }
        cursor = cursor.max(s + d.len());
    }
    if cursor < total {
        return None;
    }
    let mut payload = Vec::with_capacity(total);
    for (_, d) in &p.parts {
        payload.extend_from_slice(d);
    }
    payload.truncate(total);
    Some(build(header, &payload))
}

/// An unfragmented packet: the first fragment's headers with the lengths, flags and (IPv6)
/// next-header chain fixed, then the payload.
fn build(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.bytes.len() + payload.len());
    out.extend_from_slice(&header.bytes);
    out.extend_from_slice(payload);
    match header.v6_next {
        Some((at, next)) => {
            out[at] = next;
            let len = (out.len() - 40) as u16;
            out[4..6].copy_from_slice(&len.to_be_bytes());
        }
        None => {
            let len = out.len() as u16;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            out[6] &= 0x40; // keep DF, clear MF and the offset
            out[7] = 0;
            out[10..12].fill(0);
            let sum = checksum(&out[..header.bytes.len()]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
    }
    out
}

/// The IPv4 header checksum.
fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads a fragment's IPv4 header, or IPv6 header and extension headers up to the fragment
/// header.
fn read(ip: &[u8]) -> Option<Fragment<'_>> {
    let be16 = |at: usize| Some(u16::from_be_bytes(ip.get(at..at + 2)?.try_into().ok()?));
    match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(2)?).min(ip.len());
            if ihl < 20 || total < ihl {
                return None;
            }
            let flags = be16(6)?;
            let mut key = Key {
                src: [0; 16],
                dst: [0; 16],
                id: u32::from(be16(4)?),
                proto: u16::from(*ip.get(9)?),
            };
            key.src[..4].copy_from_slice(ip.get(12..16)?);
            key.dst[..4].copy_from_slice(ip.get(16..20)?);
            Some(Fragment {
                key,
                header: ip.get(..ihl)?,
                v6_next: None,
                offset: usize::from(flags & 0x1fff) * 8,
                more: flags & 0x2000 != 0,
                data: ip.get(ihl..total)?,
            })
        }
        6 => {
            let end = (40 + usize::from(be16(4)?)).min(ip.len());
            let (mut next, mut next_at, mut at) = (*ip.get(6)?, 6, 40);
            for _ in 0..8 {
                let len = match next {
                    0 | 43 | 60 => (usize::from(*ip.get(at + 1)?) + 1) * 8,
                    51 => (usize::from(*ip.get(at + 1)?) + 2) * 4,
                    44 => {
                        let word = be16(at + 2)?;
                        let id = u32::from_be_bytes(ip.get(at + 4..at + 8)?.try_into().ok()?);
                        return Some(Fragment {
                            key: Key {
                                src: ip.get(8..24)?.try_into().ok()?,
                                dst: ip.get(24..40)?.try_into().ok()?,
                                id,
                                proto: 0xff06,
                            },
                            header: ip.get(..at)?,
                            v6_next: Some((next_at, *ip.get(at)?)),
                            offset: usize::from(word & 0xfff8),
                            more: word & 1 != 0,
                            data: ip.get(at + 8..end)?,
                        });
                    }
                    _ => return None,
                };
                (next, next_at) = (*ip.get(at)?, at);
                at += len;
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
