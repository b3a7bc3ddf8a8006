//! End-of-run counters of a capture.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tapline_decode::defrag::DefragCounters;
use tapline_decode::reassembly::ReassemblyCounters;

/// What a capture saw and did, summed over the reader and every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets read from the source (after the BPF filter).
    pub packets: u64,
    /// Captured bytes of those packets.
    pub bytes: u64,
    /// Live capture: packets the kernel received and dropped (libpcap's stats).
    pub kernel: Option<KernelStats>,
    /// Flows started (TCP and UDP).
    pub flows: u64,
    /// Flows ended early because `--max-flows` was reached.
    pub flows_evicted: u64,
    /// Reassembled stream bytes handed on, both directions of every flow.
    pub stream_bytes: u64,
    /// TCP reassembly counters (gaps, duplicates, limit drops).
    pub reassembly: ReassemblyCounters,
    /// IP fragment reassembly (fragments in, datagrams out, limit drops).
    pub defrag: DefragCounters,
    /// Frames skipped, by reason.
    pub skipped: Skipped,
}

/// Frames that reached no flow, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Frames of a link type tapline does not decode.
    pub unsupported_link: u64,
    /// Frames that are not IP (ARP, LLDP, 802.11 management or encrypted frames, …).
    pub not_ip: u64,
    /// Frames cut by the snap length before their headers ended.
    pub truncated: u64,
    /// Frames whose headers lied about their lengths.
    pub malformed: u64,
}

/// libpcap's kernel counters for a live capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel handed to the capture.
    pub received: u64,
    /// Packets dropped for lack of buffer space.
    pub dropped: u64,
    /// Packets dropped by the interface or its driver.
    pub if_dropped: u64,
}

impl CaptureStats {
    /// Adds a worker's counters into `self`.
    pub(crate) fn merge_worker(&mut self, other: &CaptureStats) {
        self.flows += other.flows;
        self.flows_evicted += other.flows_evicted;
        self.stream_bytes += other.stream_bytes;
        self.reassembly.merge(&other.reassembly);
        let (s, o) = (&mut self.skipped, &other.skipped);
        s.unsupported_link += o.unsupported_link;
        s.not_ip += o.not_ip;
        s.truncated += o.truncated;
        s.malformed += o.malformed;
    }
}

impl fmt::Display for CaptureStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.reassembly;
        write!(f, "{} packets ({} bytes)", self.packets, self.bytes)?;
        if let Some(k) = self.kernel {
            write!(
                f,
                ", kernel: {} received, {} dropped ({} by the interface)",
                k.received, k.dropped, k.if_dropped
            )?;
        }
        write!(
            f,
            "; {} flows, {} stream bytes, {} gaps ({} bytes missing), {} retransmitted/overlapping bytes dropped",
            self.flows, self.stream_bytes, r.gaps, r.gap_bytes, r.duplicate_bytes
        )?;
        write!(
            f,
            "; limit drops: {} flows evicted (--max-flows), {} holes skipped at the per-flow buffer limit, {} bytes over --max-buffer",
            self.flows_evicted, r.flow_limit_gaps, r.total_limit_dropped_bytes
        )?;
        let (s, d) = (&self.skipped, &self.defrag);
        write!(
            f,
            "; IP fragments: {} in, {} datagrams reassembled, {} timed out, {} dropped at limits, {} overlapping bytes ignored",
            d.fragments, d.reassembled, d.timed_out, d.limit_dropped, d.overlap_bytes
        )?;
        write!(
            f,
            "; skipped: {} of an unsupported link type, {} not IP, {} truncated by the snap length, {} malformed",
            s.unsupported_link, s.not_ip, s.truncated, s.malformed + d.malformed
        )
    }
}

/// Counters the reader keeps current while a capture runs, for `--metrics` (the full
/// [`CaptureStats`] is only summed at the end). Updated every few packets and on idle ticks.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Packets read so far.
    pub packets: AtomicU64,
    /// Captured bytes read so far.
    pub bytes: AtomicU64,
    /// Live capture: packets the kernel received (libpcap's stats).
    pub kernel_received: AtomicU64,
    /// Live capture: packets the kernel or the interface dropped.
    pub kernel_dropped: AtomicU64,
}

impl LiveStats {
    /// Publishes the reader's running totals.
    pub(crate) fn publish(&self, stats: &CaptureStats) {
        self.packets.store(stats.packets, Ordering::Relaxed);
        self.bytes.store(stats.bytes, Ordering::Relaxed);
    }

    /// Publishes libpcap's kernel counters.
    pub(crate) fn publish_kernel(&self, kernel: &KernelStats) {
        self.kernel_received
            .store(kernel.received, Ordering::Relaxed);
        self.kernel_dropped
            .store(kernel.dropped + kernel.if_dropped, Ordering::Relaxed);
    }
}
