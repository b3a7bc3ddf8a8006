//! Turns fuzz input into a script of reads and gaps for one flow, shared by the HTTP and
//! PostgreSQL stream targets: each step is a control byte (bit 0: which side, bit 1: a gap
//! instead of bytes, the rest: how many bytes follow, 0..=63) then that many bytes.

use tapline_core::{EventKind, Side, Timestamp};
use tapline_decode::FlowDecoder;

/// Runs `data` through `decoder` and finishes the flow.
pub fn drive(mut decoder: FlowDecoder, mut data: &[u8]) {
    let mut out: Vec<EventKind> = Vec::new();
    let mut ts = 0;
    while let Some((&ctrl, rest)) = data.split_first() {
        let side = if ctrl & 1 == 0 { Side::Client } else { Side::Server };
        let len = usize::from(ctrl >> 2).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        if ctrl & 2 == 0 {
            decoder.feed(side, Timestamp(ts), piece, &mut out);
        } else {
            decoder.gap(side, len as u64, &mut out);
        }
        data = tail;
        ts += 1;
        out.clear();
    }
    decoder.finish(Timestamp(ts), &mut out);
}
