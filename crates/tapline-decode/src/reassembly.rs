//! TCP stream reassembly for one connection: segments in capture order in, each direction's
//! bytes out in sequence order.
//!
//! - The handshake sets each direction's start; without it (capture started mid-stream) the
//!   first segment seen from a side does.
//! - In-order data is handed out straight from the packet (no copy); segments ahead of a
//!   hole are copied into a per-direction buffer until the hole fills.
//! - Retransmissions and overlaps are trimmed: the first bytes seen for a sequence range win.
//! - Keep-alive probes (sequence one below the next expected, 0 or 1 byte) are not data.
//! - Sequence numbers wrap: positions are kept as 64-bit stream offsets.
//! - A hole is given up as a [`Delivery::Gap`] when the peer has acknowledged past it and it
//!   stayed open for [`STALL_PACKETS`] more packets, when the direction's buffer exceeds the
//!   per-flow limit, or when the connection is finished. The flow never stalls.
//! - Memory: each direction's buffer is bounded by the per-flow limit; all buffers of a
//!   [`Budget`] together by its total, past which out-of-order segments are dropped (counted).
//!
//! Timestamps are the caller's business: nothing here reads a clock.

use std::collections::BTreeMap;

use tapline_core::Side;

use crate::packet::tcp_flags;

/// Packets of a connection that may pass, after the peer acknowledged data beyond a hole,
/// before the hole is reported as a gap (a reordered capture can show the ACK first).
pub const STALL_PACKETS: u32 = 8;

/// How far ahead of the next expected byte a segment may start and still be buffered.
pub const MAX_AHEAD: u64 = 32 << 20;

/// One TCP segment as the reassembler needs it.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (used when `flags` has ACK).
    pub ack: u32,
    /// Flags byte (see [`tcp_flags`]).
    pub flags: u8,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// What the reassembler hands out, in order per direction.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// The next in-order bytes from `from`.
    Data {
        /// Who sent them.
        from: Side,
        /// The bytes.
        data: &'a [u8],
    },
    /// `len` bytes from `from` that were never seen and never will be.
    Gap {
        /// Whose bytes are missing.
        from: Side,
        /// How many.
        len: u64,
    },
}

/// Counters of what reassembly did beside delivering, for end-of-run stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyCounters {
    /// Gaps reported.
    pub gaps: u64,
    /// Bytes missing in those gaps.
    pub gap_bytes: u64,
    /// Bytes dropped because they had already been seen (retransmissions, overlaps).
    pub duplicate_bytes: u64,
    /// Segments that arrived ahead of a hole and were buffered.
    pub out_of_order: u64,
    /// Keep-alive probes ignored.
    pub keepalives: u64,
    /// Segments too far from the expected sequence to be believed, dropped.
    pub out_of_window: u64,
    /// Holes given up early because a direction's buffer reached the per-flow limit.
    pub flow_limit_gaps: u64,
    /// Out-of-order bytes dropped because the total buffer limit was reached.
    pub total_limit_dropped_bytes: u64,
}

impl ReassemblyCounters {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ReassemblyCounters) {
        self.gaps += other.gaps;
        self.gap_bytes += other.gap_bytes;
        self.duplicate_bytes += other.duplicate_bytes;
        self.out_of_order += other.out_of_order;
        self.keepalives += other.keepalives;
        self.out_of_window += other.out_of_window;
        self.flow_limit_gaps += other.flow_limit_gaps;
        self.total_limit_dropped_bytes += other.total_limit_dropped_bytes;
    }
}

/// Buffer limits shared by the connections of one worker, and their counters.
#[derive(Debug, Clone)]
pub struct Budget {
    per_flow: usize,
    total: usize,
    used: usize,
    /// What reassembly did.
    pub counters: ReassemblyCounters,
}

impl Budget {
    /// At most `per_flow` buffered bytes per direction and `total` over all connections.
    pub fn new(per_flow: usize, total: usize) -> Self {
        Budget {
            per_flow: per_flow.max(1),
            total,
            used: 0,
            counters: ReassemblyCounters::default(),
        }
    }

    /// Bytes buffered right now.
    pub fn used(&self) -> usize {
        self.used
    }
}

/// How a connection ended, as far as TCP says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Both directions sent FIN and every byte before it was accounted for.
    Fin,
    /// A reset.
    Rst,
}

/// One direction of a connection.
#[derive(Debug, Default)]
struct Stream {
    /// Whether `next` is known (SYN seen, or first segment for a mid-stream pickup).
    started: bool,
    /// The sequence number of the next expected byte.
    next: u32,
    /// Stream offset of `next`: bytes delivered plus bytes given up as gaps.
    offset: u64,
    /// Sequence number of the FIN, once seen.
    fin: Option<u32>,
    /// Segments ahead of a hole, by stream offset, never overlapping.
    pending: BTreeMap<u64, Box<[u8]>>,
    pending_bytes: usize,
    /// The peer acknowledged beyond `next`: sequence acknowledged and packets since.
    acked_past: Option<(u32, u32)>,
}

impl Stream {
    fn start_at(&mut self, seq: u32) {
        self.started = true;
        self.next = seq;
    }

    fn finished(&self) -> bool {
        self.fin == Some(self.next)
    }

    /// Signed distance from `next` to `seq`.
    fn distance(&self, seq: u32) -> i64 {
        i64::from(seq.wrapping_sub(self.next) as i32)
    }

    fn advance(&mut self, n: usize) {
        self.next = self.next.wrapping_add(n as u32);
        self.offset += n as u64;
    }

    /// Buffers `data` at stream offset `start`, skipping ranges already buffered.
    fn buffer(&mut self, mut start: u64, data: &[u8], budget: &mut Budget) {
        let end = start + data.len() as u64;
        while start < end {
            if let Some((&s, seg)) = self.pending.range(..=start).next_back() {
                let seg_end = s + seg.len() as u64;
                if seg_end > start {
                    let covered = seg_end.min(end) - start;
                    budget.counters.duplicate_bytes += covered;
                    start += covered;
                    continue;
                }
            }
            let piece_end = self
                .pending
                .range(start + 1..end)
                .next()
                .map_or(end, |(&s, _)| s);
            let len = (piece_end - start) as usize;
            if budget.used + len > budget.total {
                budget.counters.total_limit_dropped_bytes += len as u64;
            } else {
                let from = (start - (end - data.len() as u64)) as usize;
                self.pending
                    .insert(start, data[from..from + len].to_vec().into_boxed_slice());
                self.pending_bytes += len;
                budget.used += len;
            }
            start = piece_end;
        }
    }

    /// Hands out buffered segments that now continue the stream.
    fn drain(&mut self, from: Side, budget: &mut Budget, out: &mut dyn FnMut(Delivery<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.offset {
                break;
            }
            let seg = entry.remove();
            self.pending_bytes -= seg.len();
            budget.used -= seg.len();
            let skip = (self.offset - start) as usize;
            if skip >= seg.len() {
                budget.counters.duplicate_bytes += seg.len() as u64;
                continue;
            }
            budget.counters.duplicate_bytes += skip as u64;
            out(Delivery::Data {
                from,
                data: &seg[skip..],
            });
            self.advance(seg.len() - skip);
        }
        if let Some((acked, _)) = self.acked_past {
            if self.distance(acked) <= 0 {
                self.acked_past = None;
            }
        }
    }

    /// Gives up the hole before the first buffered segment (or, with nothing buffered, up
    /// to `until`), reports it as a gap, then drains.
    fn skip_hole(
        &mut self,
        from: Side,
        until: Option<u32>,
        budget: &mut Budget,
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        let len = match (self.pending.keys().next(), until) {
            (Some(&start), _) => start.saturating_sub(self.offset),
            (None, Some(seq)) => self.distance(seq).max(0) as u64,
            (None, None) => 0,
        };
        if len > 0 {
            budget.counters.gaps += 1;
            budget.counters.gap_bytes += len;
            out(Delivery::Gap { from, len });
            self.next = self.next.wrapping_add(len as u32);
            self.offset += len;
        }
        self.acked_past = None;
        self.drain(from, budget, out);
    }

    /// Takes the payload of a segment whose data starts at `seq`.
    fn data(
        &mut self,
        from: Side,
        seq: u32,
        payload: &[u8],
        budget: &mut Budget,
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        let dist = self.distance(seq);
        if dist == -1 && payload.len() <= 1 {
            budget.counters.keepalives += 1;
            return;
        }
        if payload.is_empty() {
            return;
        }
        let len = payload.len() as i64;
        if dist + len <= 0 {
            budget.counters.duplicate_bytes += payload.len() as u64;
            return;
        }
        if dist > MAX_AHEAD as i64 {
            budget.counters.out_of_window += 1;
            return;
        }
        let (payload, dist) = if dist < 0 {
            budget.counters.duplicate_bytes += (-dist) as u64;
            (&payload[(-dist) as usize..], 0)
        } else {
            (payload, dist as u64)
        };
        if dist > 0 {
            budget.counters.out_of_order += 1;
            self.buffer(self.offset + dist, payload, budget);
            while self.pending_bytes > budget.per_flow {
                budget.counters.flow_limit_gaps += 1;
                self.skip_hole(from, None, budget, out);
            }
            return;
        }
        // In order: hand out what precedes the first buffered segment straight from the
        // packet; buffered bytes win over the rest (first seen wins).
        let direct = match self.pending.keys().next() {
            Some(&start) => ((start - self.offset) as usize).min(payload.len()),
            None => payload.len(),
        };
        out(Delivery::Data {
            from,
            data: &payload[..direct],
        });
        self.advance(direct);
        if direct < payload.len() {
            self.buffer(self.offset, &payload[direct..], budget);
        }
        self.drain(from, budget, out);
    }
}

/// Reassembles one TCP connection. Sides are the caller's: [`Side::Client`] is whoever it
/// decided opened the connection.
#[derive(Debug, Default)]
pub struct TcpReassembler {
    streams: [Stream; 2],
    reset: bool,
}

fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl TcpReassembler {
    /// A connection with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one segment sent by `from`; in-order bytes and gaps go to `out`.
    pub fn segment(
        &mut self,
        from: Side,
        seg: &Segment<'_>,
        budget: &mut Budget,
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        let mine = &mut self.streams[index(from)];
        if seg.flags & tcp_flags::RST != 0 {
            self.reset = true;
        }
        let mut data_seq = seg.seq;
        if seg.flags & tcp_flags::SYN != 0 {
            data_seq = seg.seq.wrapping_add(1);
            if !mine.started {
                mine.start_at(data_seq);
            }
        } else if !mine.started {
            mine.start_at(seg.seq);
        }
        mine.data(from, data_seq, seg.payload, budget, out);
        if seg.flags & tcp_flags::FIN != 0 && mine.fin.is_none() {
            let fin = data_seq.wrapping_add(seg.payload.len() as u32);
            if mine.distance(fin) >= 0 {
                mine.fin = Some(fin);
            }
        }
        self.acknowledge(from.peer(), seg, budget, out);
        for stream in &mut self.streams {
            if let Some((_, waited)) = stream.acked_past.as_mut() {
                *waited += 1;
            }
        }
    }

    /// The segment from the other side acknowledges `peer`'s stream: a hole that stays
    /// acknowledged for [`STALL_PACKETS`] packets was lost to the capture.
    fn acknowledge(
        &mut self,
        peer: Side,
        seg: &Segment<'_>,
        budget: &mut Budget,
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        let stream = &mut self.streams[index(peer)];
        if seg.flags & tcp_flags::ACK != 0 && stream.started && !stream.finished() {
            // An ACK of a FIN covers one sequence number past the data.
            let acked = match stream.fin {
                Some(fin) if seg.ack == fin.wrapping_add(1) => fin,
                _ => seg.ack,
            };
            let ahead = stream.distance(acked);
            if ahead > 0 && ahead <= MAX_AHEAD as i64 {
                match stream.acked_past {
                    Some((seq, waited)) => {
                        let furthest = if stream.distance(acked) > stream.distance(seq) {
                            acked
                        } else {
                            seq
                        };
                        if waited >= STALL_PACKETS {
                            stream.skip_hole(peer, Some(furthest), budget, out);
                        } else {
                            stream.acked_past = Some((furthest, waited));
                        }
                    }
                    None => stream.acked_past = Some((acked, 0)),
                }
            }
        }
    }

    /// Whether the connection is over: reset, or both sides' FINs reached.
    pub fn closed(&self) -> Option<Closed> {
        if self.reset {
            Some(Closed::Rst)
        } else if self.streams.iter().all(Stream::finished) {
            Some(Closed::Fin)
        } else {
            None
        }
    }

    /// Bytes buffered ahead of holes, both directions.
    pub fn buffered(&self) -> usize {
        self.streams.iter().map(|s| s.pending_bytes).sum()
    }

    /// The connection is over (closed, timed out, evicted, end of capture): every hole
    /// still open is reported as a gap and what was buffered behind it is delivered, then
    /// the buffers are released.
    pub fn finish(&mut self, budget: &mut Budget, out: &mut dyn FnMut(Delivery<'_>)) {
        for side in [Side::Client, Side::Server] {
            let stream = &mut self.streams[index(side)];
            while !stream.pending.is_empty() {
                stream.skip_hole(side, None, budget, out);
            }
            if let Some(fin) = stream.fin {
                if !stream.finished() {
                    stream.skip_hole(side, Some(fin), budget, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
