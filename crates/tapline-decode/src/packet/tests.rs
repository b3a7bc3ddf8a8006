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

/// An IPv4 TCP packet (no link layer) carrying `payload`.
fn tcp_ip(payload: &[u8]) -> Vec<u8> {
    tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, payload)[14..].to_vec()
}

/// An outer IPv4 header around `payload` with protocol `proto` and these addresses.
fn outer(proto: u8, src: u8, dst: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, src, 192, 0, 2, dst]);
    h.extend_from_slice(payload);
    h
}

fn payload_of(link: LinkType, frame: &[u8]) -> Option<Vec<u8>> {
    match decode(link, frame) {
        Decoded::Ip(ip) => Some(ip.transport.payload().to_vec()),
        _ => None,
    }
}

#[test]
fn mpls_pseudowire_carries_an_ethernet_frame() {
    let inner = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"pw");
    // A VLAN tag, one MPLS label at the bottom of the stack, a control word.
    let mut frame = vec![0; 12];
    frame.extend_from_slice(&[0x81, 0x00, 0, 9, 0x88, 0x47, 0, 1, 1, 64, 0, 0, 0, 0]);
    frame.extend_from_slice(&inner);
    assert_eq!(
        payload_of(LinkType::Ethernet, &frame).as_deref(),
        Some(&b"pw"[..])
    );
}

#[test]
fn wifi_frames_that_carry_no_clear_ip_are_not_ip() {
    let mut data = vec![0x08, 0x02, 0, 0];
    data.extend_from_slice(&[0; 20]);
    data.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
    data.extend_from_slice(&tcp_ip(b"w"));
    assert_eq!(
        payload_of(LinkType::Ieee80211, &data).as_deref(),
        Some(&b"w"[..])
    );
    let mut protected = data.clone();
    protected[1] |= 0x40;
    let mut beacon = data.clone();
    beacon[0] = 0x80;
    for frame in [protected, beacon] {
        assert_eq!(decode(LinkType::Ieee80211, &frame), Decoded::NotIp);
    }
    // Radiotap with the data-pad flag: a QoS header (26 bytes) padded to 28.
    let mut padded = vec![0, 0, 9, 0, 0x02, 0, 0, 0, 0x20, 0x88, 0x02, 0, 0];
    padded.extend_from_slice(&[0; 20]);
    padded.extend_from_slice(&[0, 0, 0, 0]);
    padded.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
    padded.extend_from_slice(&tcp_ip(b"pad"));
    assert_eq!(
        payload_of(LinkType::Radiotap, &padded).as_deref(),
        Some(&b"pad"[..])
    );
}

#[test]
fn pptp_gre_carries_ppp_and_bad_vxlan_stays_udp() {
    // Enhanced GRE: version 1, key present, sequence number present, protocol PPP.
    let mut gre = vec![
        0x30, 0x01, 0x88, 0x0b, 0, 4, 0, 1, 0, 0, 0, 1, 0xff, 0x03, 0, 0x21,
    ];
    gre.extend_from_slice(&tcp_ip(b"pptp"));
    let frame = outer(47, 1, 2, &gre);
    assert_eq!(
        payload_of(LinkType::Raw, &frame).as_deref(),
        Some(&b"pptp"[..])
    );

    let mut udp = vec![0xc3, 0x50, 0x12, 0xb5, 0, 16, 0, 0];
    udp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // VXLAN flags without the I bit
    let frame = outer(17, 1, 2, &udp);
    let Decoded::Ip(ip) = decode(LinkType::Raw, &frame) else {
        panic!("not decoded");
    };
    assert_eq!(ip.transport.ports(), (50000, 4789));
}

#[test]
fn tunnelled_flows_hash_by_their_inner_addresses() {
    let inner_ab = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"");
    let inner_ba = tcp_frame([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, b"");
    let vxlan = |src: u8, dst: u8, sport: u16, inner: &[u8]| {
        let mut udp = sport.to_be_bytes().to_vec();
        udp.extend_from_slice(&[0x12, 0xb5, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 1, 0]);
        udp.extend_from_slice(inner);
        outer(17, src, dst, &udp)
    };
    // The two directions take different outer addresses and VXLAN source ports.
    let ab = vxlan(1, 2, 40000, &inner_ab);
    let ba = vxlan(3, 4, 51111, &inner_ba);
    assert_eq!(flow_hash(LinkType::Raw, &ab), flow_hash(LinkType::Raw, &ba));
    assert_eq!(
        flow_hash(LinkType::Raw, &ab),
        flow_hash(LinkType::Ethernet, &inner_ab)
    );
    // An inner fragment is handed back whole, from its IP header on.
    let mut fragment = inner_ab[14..].to_vec();
    fragment[6] = 0x20;
    let gre = outer(47, 1, 2, &[&[0, 0, 0x08, 0x00][..], &fragment].concat());
    assert_eq!(steer(LinkType::Raw, &gre), Steer::Fragment(&fragment[..]));
}

#[test]
fn nested_and_cut_encapsulations_never_panic() {
    // IP-in-IP nested deeper than followed is malformed, not a stack overflow.
    let mut frame = tcp_ip(b"deep");
    for _ in 0..20 {
        frame = outer(4, 1, 2, &frame);
    }
    assert_eq!(decode(LinkType::Raw, &frame), Decoded::Malformed);
    let links = [
        LinkType::Ethernet,
        LinkType::Ieee80211,
        LinkType::Radiotap,
        LinkType::Prism,
        LinkType::Avs,
        LinkType::Nflog,
        LinkType::Ppp,
        LinkType::PppEther,
    ];
    let gre = outer(
        47,
        1,
        2,
        &[
            &[0x30, 0, 0x88, 0xbe][..],
            &[0; 8],
            &tcp_frame([1; 4], [2; 4], 1, 2, b"x"),
        ]
        .concat(),
    );
    for link in links {
        for cut in 0..gre.len() {
            let _ = decode(link, &gre[..cut]);
            let _ = steer(link, &gre[..cut]);
        }
    }
}
