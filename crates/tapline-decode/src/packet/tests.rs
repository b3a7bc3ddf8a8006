use super::*;
use etherparse::PacketBuilder;

fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 65535)
        .syn();
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

#[test]
fn decodes_ethernet_ipv4_tcp() {
    let frame = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"hello");
    let Decoded::Ip(ip) = decode(LinkType::Ethernet, &frame) else {
        panic!("not decoded");
    };
    assert_eq!(ip.src.to_string(), "10.0.0.1");
    let Transport::Tcp(t) = ip.transport else {
        panic!("not tcp")
    };
    assert_eq!((t.sport, t.dport, t.seq), (1234, 80, 1000));
    assert_eq!(t.flags & tcp_flags::SYN, tcp_flags::SYN);
    assert_eq!(t.payload, b"hello");
}

#[test]
fn decodes_qinq_sll_sll2_and_null() {
    let eth = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"x");
    let ip = &eth[14..];
    // QinQ: outer 802.1ad, inner 802.1Q.
    let mut qinq = eth[..12].to_vec();
    qinq.extend_from_slice(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
    qinq.extend_from_slice(ip);
    let mut sll = vec![0, 0, 3, 4, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(ip);
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 1, 3, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0,
    ];
    sll2.extend_from_slice(ip);
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(ip);
    for (link, frame) in [
        (LinkType::Ethernet, &qinq),
        (LinkType::LinuxSll, &sll),
        (LinkType::LinuxSll2, &sll2),
        (LinkType::Null, &null),
        (LinkType::Raw, &ip.to_vec()),
    ] {
        let Decoded::Ip(p) = decode(link, frame) else {
            panic!("{link:?} not decoded");
        };
        assert_eq!(p.transport.payload(), b"x", "{link:?}");
        assert_eq!(flow_hash(link, frame), flow_hash(LinkType::Ethernet, &eth));
    }
}

#[test]
fn hash_is_symmetric_and_spreads() {
    let ab = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"");
    let ba = tcp_frame([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, b"");
    let other = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1235, 80, b"");
    assert_eq!(
        flow_hash(LinkType::Ethernet, &ab),
        flow_hash(LinkType::Ethernet, &ba)
    );
    assert_ne!(
        flow_hash(LinkType::Ethernet, &ab),
        flow_hash(LinkType::Ethernet, &other)
    );
}

#[test]
fn bad_tcp_data_offset_is_malformed_not_a_panic() {
    let mut frame = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"abc");
    frame[14 + 20 + 12] = 0x00; // data offset 0
    assert_eq!(decode(LinkType::Ethernet, &frame), Decoded::Malformed);
    for cut in 0..frame.len() {
        let _ = decode(LinkType::Ethernet, &frame[..cut]);
        let _ = flow_hash(LinkType::Ethernet, &frame[..cut]);
    }
}

#[test]
fn fragments_are_reported() {
    let mut frame = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"abc");
    frame[14 + 6] = 0x20; // more fragments
    assert_eq!(decode(LinkType::Ethernet, &frame), Decoded::Fragment);
}
