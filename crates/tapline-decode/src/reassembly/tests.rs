use super::*;
use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};

/// Collects deliveries as (side, bytes) with gaps as `<gap N>` markers.
#[derive(Default)]
struct Collected {
    client: Vec<u8>,
    server: Vec<u8>,
    gaps: Vec<(Side, u64)>,
}

impl Collected {
    fn take(&mut self) -> impl FnMut(Delivery<'_>) + '_ {
        |d| match d {
            Delivery::Data { from, data } => match from {
                Side::Client => self.client.extend_from_slice(data),
                Side::Server => self.server.extend_from_slice(data),
            },
            Delivery::Gap { from, len } => self.gaps.push((from, len)),
        }
    }
}

fn seg(seq: u32, flags: u8, payload: &[u8]) -> Segment<'_> {
    Segment {
        seq,
        ack: 0,
        flags,
        payload,
    }
}

fn acking(seq: u32, ack: u32, payload: &[u8]) -> Segment<'_> {
    Segment {
        seq,
        ack,
        flags: ACK,
        payload,
    }
}

fn budget() -> Budget {
    Budget::new(1 << 20, 1 << 24)
}

#[test]
fn handshake_then_in_order_both_ways_and_fin() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    r.segment(Side::Client, &seg(100, SYN, b""), &mut b, &mut c.take());
    r.segment(
        Side::Server,
        &seg(500, SYN | ACK, b""),
        &mut b,
        &mut c.take(),
    );
    r.segment(
        Side::Client,
        &seg(101, ACK, b"GET /"),
        &mut b,
        &mut c.take(),
    );
    r.segment(
        Side::Server,
        &seg(501, ACK, b"200 OK"),
        &mut b,
        &mut c.take(),
    );
    r.segment(
        Side::Client,
        &seg(106, FIN | ACK, b""),
        &mut b,
        &mut c.take(),
    );
    assert_eq!(r.closed(), None);
    r.segment(
        Side::Server,
        &seg(507, FIN | ACK, b""),
        &mut b,
        &mut c.take(),
    );
    assert_eq!(r.closed(), Some(Closed::Fin));
    assert_eq!(
        (c.client.as_slice(), c.server.as_slice()),
        (&b"GET /"[..], &b"200 OK"[..])
    );
    assert!(c.gaps.is_empty());
}

#[test]
fn out_of_order_retransmitted_and_overlapping_segments() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    r.segment(Side::Client, &seg(0, SYN, b""), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(6, ACK, b"ghij"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(9, ACK, b"XXlm"), &mut b, &mut c.take()); // overlaps: j stays
    r.segment(Side::Client, &seg(1, ACK, b"abc"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(1, ACK, b"abc"), &mut b, &mut c.take()); // retransmission
    assert_eq!(c.client, b"abc");
    assert_eq!(b.used(), 8 - 1);
    r.segment(Side::Client, &seg(3, ACK, b"YdeZ"), &mut b, &mut c.take()); // Z loses to g
    assert_eq!(c.client, b"abcdeghijXlm");
    assert_eq!(b.used(), 0);
}

#[test]
fn sequence_numbers_wrap() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    let isn = u32::MAX - 2;
    r.segment(Side::Client, &seg(isn, SYN, b""), &mut b, &mut c.take());
    r.segment(
        Side::Client,
        &seg(isn.wrapping_add(4), ACK, b"defg"),
        &mut b,
        &mut c.take(),
    );
    r.segment(
        Side::Client,
        &seg(isn.wrapping_add(1), ACK, b"abc"),
        &mut b,
        &mut c.take(),
    );
    assert_eq!(c.client, b"abcdefg");
}

#[test]
fn keepalive_probe_is_not_data() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    r.segment(Side::Client, &seg(10, ACK, b"hello"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(14, ACK, b"o"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(14, ACK, b""), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(15, ACK, b"!"), &mut b, &mut c.take());
    assert_eq!(c.client, b"hello!");
    assert_eq!(b.counters.keepalives, 2);
    assert!(c.gaps.is_empty());
}

#[test]
fn an_acknowledged_hole_becomes_a_gap_after_a_few_packets() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    r.segment(
        Side::Server,
        &seg(1000, ACK, b"aaaa"),
        &mut b,
        &mut c.take(),
    );
    // 1004..1008 lost by the capture; the client acknowledges it anyway.
    r.segment(
        Side::Server,
        &seg(1008, ACK, b"cccc"),
        &mut b,
        &mut c.take(),
    );
    for _ in 0..=STALL_PACKETS {
        r.segment(Side::Client, &acking(1, 1012, b""), &mut b, &mut c.take());
    }
    assert_eq!(c.gaps, vec![(Side::Server, 4)]);
    assert_eq!(c.server, b"aaaacccc");
    // The lost segment arriving late is a duplicate, not data.
    r.segment(
        Side::Server,
        &seg(1004, ACK, b"bbbb"),
        &mut b,
        &mut c.take(),
    );
    assert_eq!(c.server, b"aaaacccc");
}

#[test]
fn a_hole_filled_before_the_stall_limit_is_no_gap() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    r.segment(
        Side::Server,
        &seg(1000, ACK, b"aaaa"),
        &mut b,
        &mut c.take(),
    );
    r.segment(
        Side::Server,
        &seg(1008, ACK, b"cccc"),
        &mut b,
        &mut c.take(),
    );
    r.segment(Side::Client, &acking(1, 1012, b""), &mut b, &mut c.take());
    r.segment(
        Side::Server,
        &seg(1004, ACK, b"bbbb"),
        &mut b,
        &mut c.take(),
    );
    for _ in 0..=STALL_PACKETS {
        r.segment(Side::Client, &acking(1, 1012, b""), &mut b, &mut c.take());
    }
    assert!(c.gaps.is_empty());
    assert_eq!(c.server, b"aaaabbbbcccc");
}

#[test]
fn per_flow_limit_forces_a_gap_and_total_limit_drops() {
    let (mut r, mut c) = (TcpReassembler::new(), Collected::default());
    let mut b = Budget::new(8, 1 << 20);
    r.segment(Side::Client, &seg(0, ACK, b"a"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(5, ACK, b"fghij"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(10, ACK, b"klmno"), &mut b, &mut c.take());
    assert_eq!(c.gaps, vec![(Side::Client, 4)]);
    assert_eq!(c.client, b"afghijklmno");
    assert_eq!(b.counters.flow_limit_gaps, 1);

    let (mut r, mut c) = (TcpReassembler::new(), Collected::default());
    let mut b = Budget::new(1 << 20, 3);
    r.segment(Side::Client, &seg(0, ACK, b"a"), &mut b, &mut c.take());
    r.segment(Side::Client, &seg(5, ACK, b"fghij"), &mut b, &mut c.take());
    assert_eq!(b.counters.total_limit_dropped_bytes, 5);
    assert_eq!(b.used(), 0);
}

#[test]
fn finish_reports_open_holes_and_rst_closes() {
    let (mut r, mut b, mut c) = (TcpReassembler::new(), budget(), Collected::default());
    r.segment(Side::Client, &seg(0, ACK, b"ab"), &mut b, &mut c.take());
    r.segment(
        Side::Client,
        &seg(4, ACK | FIN, b"ef"),
        &mut b,
        &mut c.take(),
    );
    r.segment(Side::Server, &seg(77, RST, b""), &mut b, &mut c.take());
    assert_eq!(r.closed(), Some(Closed::Rst));
    r.finish(&mut b, &mut c.take());
    assert_eq!(c.client, b"abef");
    assert_eq!(c.gaps, vec![(Side::Client, 2)]);
    assert_eq!(b.used(), 0);
}
