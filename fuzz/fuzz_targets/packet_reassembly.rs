//! Link/IP/TCP decoding and TCP reassembly. The first byte picks the mode:
//! even — frames of a link type (length-prefixed), decoded, hashed, and their TCP segments
//! reassembled as one connection; odd — a script of raw segments straight into the
//! reassembler (to reach deep reassembly states without valid checksummed headers).
//! Invariants: buffer accounting matches what is buffered, finishing releases everything,
//! and each side's bytes plus gaps never exceed what its segments could have carried.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapline_core::Side;
use tapline_decode::packet::{decode, flow_hash, Decoded, LinkType, Transport};
use tapline_decode::reassembly::{Budget, Delivery, Segment, TcpReassembler};

const LINKS: [LinkType; 6] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
];

#[derive(Default)]
struct Totals {
    data: [u64; 2],
    gaps: [u64; 2],
}

impl Totals {
    fn take(&mut self, d: Delivery<'_>) {
        match d {
            Delivery::Data { from, data } => self.data[from as usize] += data.len() as u64,
            Delivery::Gap { from, len } => self.gaps[from as usize] += len,
        }
    }
}

fn check(r: &TcpReassembler, budget: &Budget) {
    assert_eq!(r.buffered(), budget.used(), "buffer accounting");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut budget = if mode & 2 == 0 {
        Budget::new(1 << 16, 1 << 20)
    } else {
        Budget::new(64, 256)
    };
    let mut r = TcpReassembler::new();
    let mut totals = Totals::default();
    let mut carried = [0u64; 2];
    if mode & 1 == 0 {
        let link = LINKS[usize::from(mode >> 2) % LINKS.len()];
        let mut rest = rest;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let frame = &rest[2..(2 + len).min(rest.len())];
            rest = &rest[(2 + len).min(rest.len())..];
            let _ = flow_hash(link, frame);
            let Decoded::Ip(ip) = decode(link, frame) else {
                continue;
            };
            let _ = (ip.transport.name(), ip.transport.ports(), ip.transport.payload());
            if let Transport::Tcp(t) = ip.transport {
                let side = if (ip.src, t.sport) <= (ip.dst, t.dport) {
                    Side::Client
                } else {
                    Side::Server
                };
                carried[side as usize] += t.payload.len() as u64 + 2;
                let seg = Segment {
                    seq: t.seq,
                    ack: t.ack,
                    flags: t.flags,
                    payload: t.payload,
                };
                r.segment(side, &seg, &mut budget, &mut |d| totals.take(d));
                check(&r, &budget);
            }
        }
    } else {
        // Records: flags (bit 7 = server side), seq (4), ack (4), length (1), payload.
        let mut rest = rest;
        while rest.len() >= 10 {
            let flags = rest[0];
            let seq = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
            let ack = u32::from_le_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let len = usize::from(rest[9]).min(rest.len() - 10);
            let payload = &rest[10..10 + len];
            rest = &rest[10 + len..];
            let side = if flags & 0x80 != 0 {
                Side::Server
            } else {
                Side::Client
            };
            carried[side as usize] += len as u64 + 2;
            let seg = Segment {
                seq,
                ack,
                flags: flags & 0x3f,
                payload,
            };
            r.segment(side, &seg, &mut budget, &mut |d| totals.take(d));
            check(&r, &budget);
        }
    }
    let _ = r.closed();
    r.finish(&mut budget, &mut |d| totals.take(d));
    assert_eq!(budget.used(), 0, "finish releases every buffer");
    for side in 0..2 {
        // Data handed out can only come from segments; gaps can span unseen bytes, so only
        // the data is bounded.
        assert!(totals.data[side] <= carried[side], "more bytes out than in");
    }
});
