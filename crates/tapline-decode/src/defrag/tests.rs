use super::*;
use etherparse::PacketBuilder;

fn udp_v4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 2000)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn udp_v6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6([1; 16], [2; 16], 64)
        .udp(1000, 2000)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// The IPv4 fragment of `packet` covering payload bytes `range` (multiples of 8 but the last).
fn frag_v4(packet: &[u8], range: std::ops::Range<usize>, id: u16) -> Vec<u8> {
    let payload = &packet[20..];
    let more = range.end < payload.len();
    let mut out = packet[..20].to_vec();
    out.extend_from_slice(&payload[range.clone()]);
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out[4..6].copy_from_slice(&id.to_be_bytes());
    let word = (range.start / 8) as u16 | if more { 0x2000 } else { 0 };
    out[6..8].copy_from_slice(&word.to_be_bytes());
    out
}

/// The IPv6 fragment of `packet` (no extension headers) covering payload bytes `range`.
fn frag_v6(packet: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let payload = &packet[40..];
    let more = range.end < payload.len();
    let mut out = packet[..40].to_vec();
    out[6] = 44;
    let word = range.start as u16 | u16::from(more);
    out.extend_from_slice(&[packet[6], 0]);
    out.extend_from_slice(&word.to_be_bytes());
    out.extend_from_slice(&7u32.to_be_bytes());
    out.extend_from_slice(&payload[range]);
    let len = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs_micros(secs, 0)
}

#[test]
fn ipv4_out_of_order_with_an_overlap_is_the_original_datagram() {
    let payload: Vec<u8> = (0..100u8).collect();
    let packet = udp_v4(&payload);
    let mut d = Defragmenter::new(DefragLimits::default());
    // UDP header + 100 bytes = 108 bytes of IP payload.
    assert_eq!(d.push(ts(1), &frag_v4(&packet, 48..108, 9)), None);
    assert_eq!(d.push(ts(1), &frag_v4(&packet, 16..56, 9)), None); // overlaps 48..56
    let whole = d
        .push(ts(1), &frag_v4(&packet, 0..24, 9))
        .expect("complete");
    assert_eq!(whole[2..4], packet[2..4], "total length");
    assert_eq!(whole[6..8], [0, 0], "no more fragments, no offset");
    assert_eq!(checksum(&whole[..20]), 0, "checksum recomputed");
    assert_eq!(whole[20..], packet[20..]);
    assert_eq!(d.counters.overlap_bytes, 8 + 8);
    assert_eq!((d.counters.reassembled, d.pending()), (1, 0));
    assert_eq!(d.bytes, 0);
}

#[test]
fn the_first_copy_of_overlapping_bytes_wins() {
    let packet = udp_v4(&[b'a'; 40]);
    let mut forged = packet.clone();
    forged[20 + 16..].fill(b'X');
    let mut d = Defragmenter::new(DefragLimits::default());
    d.push(ts(1), &frag_v4(&packet, 16..48, 1));
    d.push(ts(1), &frag_v4(&forged, 8..48, 1));
    let whole = d.push(ts(1), &frag_v4(&packet, 0..8, 1)).unwrap();
    assert_eq!(&whole[20..], &packet[20..]);
}

#[test]
fn ipv6_fragments_reassemble_with_the_next_header_restored() {
    let payload: Vec<u8> = (0..200u8).collect();
    let packet = udp_v6(&payload);
    let mut d = Defragmenter::new(DefragLimits::default());
    assert_eq!(d.push(ts(1), &frag_v6(&packet, 104..208)), None);
    assert_eq!(d.push(ts(1), &frag_v6(&packet, 56..112)), None);
    let whole = d.push(ts(1), &frag_v6(&packet, 0..56)).expect("complete");
    assert_eq!(whole, packet);
}

#[test]
fn incomplete_datagrams_time_out_and_the_budget_drops_the_oldest() {
    let packet = udp_v4(&[0; 64]);
    let mut d = Defragmenter::new(DefragLimits {
        max_bytes: 110,
        timeout: Duration::from_secs(30),
    });
    d.push(ts(1), &frag_v4(&packet, 0..32, 1));
    d.push(ts(2), &frag_v4(&packet, 0..32, 2));
    d.push(ts(3), &frag_v4(&packet, 0..32, 3));
    assert_eq!(d.counters.limit_dropped, 1, "52 bytes each, 110 allowed");
    assert_eq!(d.pending(), 2);
    d.expire(ts(40));
    assert_eq!((d.pending(), d.counters.timed_out, d.bytes), (0, 2, 0));
    // A fragment of a datagram that timed out does not complete it.
    assert_eq!(d.push(ts(41), &frag_v4(&packet, 32..72, 2)), None);
}

#[test]
fn oversized_and_garbage_fragments_are_counted_not_kept() {
    let packet = udp_v4(&[0; 16]);
    let mut big = frag_v4(&packet, 0..16, 5);
    big[6..8].copy_from_slice(&(0x2000u16 | 8190).to_be_bytes()); // offset 65,520
    let mut d = Defragmenter::new(DefragLimits::default());
    d.push(ts(1), &big);
    assert_eq!(d.push(ts(1), &[0x45, 0, 0]), None);
    assert_eq!((d.counters.limit_dropped, d.counters.malformed), (1, 1));
    for cut in 0..packet.len() {
        let _ = d.push(ts(1), &frag_v4(&packet, 0..8, 6)[..cut.min(28)]);
    }
}
