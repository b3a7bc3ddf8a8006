//! IP fragment reassembly: the input is a script of fragments (a length-prefixed IP packet
//! each, and a clock step), pushed into a small-budget reassembler. Invariants: what it
//! buffers stays within its budget (plus the one datagram being added), every IPv4 datagram
//! it returns is unfragmented, of at most 65,535 payload bytes, and expiring
//! everything leaves nothing buffered.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapline_core::Timestamp;
use tapline_decode::defrag::{DefragLimits, Defragmenter};
use tapline_decode::packet::{decode, LinkType};

const BUDGET: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut d = Defragmenter::new(DefragLimits {
        max_bytes: BUDGET,
        timeout: Duration::from_secs(2),
    });
    let mut now = 0i64;
    let mut rest = data;
    while rest.len() >= 3 {
        now += i64::from(rest[0] & 3) * 1_000_000;
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let packet = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];
        if let Some(datagram) = d.push(Timestamp(now), packet) {
            assert!(datagram.len() <= 65_535 + 60 + 8 * 255);
            if datagram[0] >> 4 == 4 {
                assert_eq!(u16::from_be_bytes([datagram[6], datagram[7]]) & 0x3fff, 0);
            }
            let _ = decode(LinkType::Raw, &datagram);
        }
        assert!(d.buffered() <= BUDGET + 65_535 + 2048, "{}", d.buffered());
    }
    d.expire(Timestamp(i64::MAX));
    assert_eq!((d.pending(), d.buffered()), (0, 0));
});
