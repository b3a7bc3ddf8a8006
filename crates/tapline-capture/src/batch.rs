//! Batches of packets handed from the reader to a worker: one buffer of frame bytes and
//! their records, recycled between the two.

use tapline_core::Timestamp;

/// Packets per batch before it is sent.
pub(crate) const MAX_PACKETS: usize = 256;
/// Frame bytes per batch before it is sent.
pub(crate) const MAX_BYTES: usize = 256 * 1024;

/// One packet in a batch: its header and where its bytes are in [`Batch::data`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub ts: Timestamp,
    /// Length on the wire.
    pub len: u32,
    /// The bytes are an IP datagram reassembled from fragments, not a frame of the
    /// capture's link type.
    pub reassembled: bool,
    start: u32,
    end: u32,
}

/// Packets for one worker.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    data: Vec<u8>,
    records: Vec<Record>,
    /// The newest packet time the reader had seen when it sent this batch (for timeouts on
    /// workers that get no packets).
    pub now: Timestamp,
}

impl Batch {
    pub(crate) fn with_capacity() -> Batch {
        Batch {
            data: Vec::with_capacity(MAX_BYTES),
            records: Vec::with_capacity(MAX_PACKETS),
            now: Timestamp::default(),
        }
    }

    /// Adds a frame (or, `reassembled`, an IP datagram) of wire length `len`.
    pub(crate) fn push(&mut self, ts: Timestamp, len: u32, frame: &[u8], reassembled: bool) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(frame);
        self.records.push(Record {
            ts,
            len,
            reassembled,
            start,
            end: self.data.len() as u32,
        });
    }

    pub(crate) fn is_full(&self) -> bool {
        self.records.len() >= MAX_PACKETS || self.data.len() >= MAX_BYTES
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    /// Each packet with its bytes.
    pub(crate) fn packets(&self) -> impl Iterator<Item = (Record, &[u8])> {
        self.records
            .iter()
            .map(|r| (*r, &self.data[r.start as usize..r.end as usize]))
    }
}
