//! Link types, tunnels and IP fragments: the bundled sample's real HTTP and PostgreSQL
//! packets, re-wrapped by the test in each link layer or encapsulation (or fragmented, out
//! of order, with an overlap), decoded by `tapline capture -r` and by tshark: the SQL texts,
//! HTTP requests and statuses must be the same, and the same as the sample's own.

mod common;
mod decode_tshark;
mod encap;

use decode_tshark::{tshark_facts, Facts};
use encap::*;

/// LINKTYPE_ numbers used here.
const ETHERNET: u32 = 1;
const PPP: u32 = 9;
const RAW: u32 = 101;
const IEEE802_11: u32 = 105;
const LINUX_SLL: u32 = 113;
const PRISM: u32 = 119;
const RADIOTAP: u32 = 127;
const AVS: u32 = 163;
const NFLOG: u32 = 239;

/// A way to wrap one IP packet, and the link type of the result.
struct Wrap {
    name: &'static str,
    linktype: u32,
    frame: fn(&[u8]) -> Vec<u8>,
}

/// Writes the sample re-wrapped by `wrap`, then checks tapline against tshark and the
/// sample; returns tapline's stderr.
fn agrees(name: &str, linktype: u32, packets: Vec<Packet>) -> String {
    let dir = common::temp_dir();
    let file = dir.path().join(format!("{name}.pcap"));
    write_pcap(&file, linktype, &packets);
    let (code, events, stderr) = common::capture(&["-r", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{name}: {stderr}");
    let got = Facts::merged(Facts::from_json_lines(&events).values());
    let want = Facts::merged(tshark_facts(&file, &[]).values());
    assert_eq!(
        got, want,
        "{name}: tapline (left) and tshark (right) disagree"
    );
    assert_eq!(got, sample_facts(), "{name}: not what the sample holds");
    stderr
}

/// What the sample itself holds (7 requests, 7 statuses, its SQL statements).
fn sample_facts() -> Facts {
    let (_, events, _) = common::capture(&[
        "-r",
        common::repo_root()
            .join("samples/sample.pcap")
            .to_str()
            .unwrap(),
    ]);
    let facts = Facts::merged(Facts::from_json_lines(&events).values());
    assert_eq!((facts.requests.len(), facts.statuses.len()), (7, 7));
    assert!(facts.sql.len() >= 10, "{facts:?}");
    facts
}

fn run(wraps: &[Wrap]) {
    if !common::have("tshark") {
        eprintln!("skipped: tshark (the reference decoder) is not installed");
        return;
    }
    for w in wraps {
        let packets = sample_ip_packets()
            .into_iter()
            .map(|(s, u, ip)| (s, u, (w.frame)(&ip)))
            .collect();
        let stderr = agrees(w.name, w.linktype, packets);
        assert!(
            stderr.contains("skipped: 0 of an unsupported link type, 0 not IP, 0 truncated by the snap length, 0 malformed"),
            "{}: {stderr}",
            w.name
        );
    }
}

/// LLC/SNAP with the packet's EtherType.
fn snap(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0xaa, 0xaa, 0x03, 0, 0, 0];
    f.extend_from_slice(&ip_ethertype(ip).to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// An 802.11 data frame header from the distribution system (to a station): frame
/// control, duration, three addresses, sequence control.
fn wlan_header(frame_control: u8) -> Vec<u8> {
    let mut f = vec![frame_control, 0x02, 0, 0];
    f.extend_from_slice(&[
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x02,
    ]);
    f.extend_from_slice(&[0x10, 0]);
    f
}

/// An 802.11 data frame.
fn wlan_data(ip: &[u8]) -> Vec<u8> {
    [wlan_header(0x08), snap(ip)].concat()
}

/// An 802.11 QoS data frame (subtype 8: two more header bytes).
fn wlan_qos(ip: &[u8]) -> Vec<u8> {
    [wlan_header(0x88), vec![0x05, 0], snap(ip)].concat()
}

#[test]
fn wifi_link_types_agree_with_tshark() {
    run(&[
        Wrap {
            name: "ieee802_11",
            linktype: IEEE802_11,
            frame: wlan_data,
        },
        Wrap {
            name: "radiotap",
            linktype: RADIOTAP,
            // Version 0, length 17: TSFT (8 bytes, aligned to 8) and Flags (no FCS).
            frame: |ip| {
                let mut f = vec![0, 0, 17, 0, 0x03, 0, 0, 0];
                f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0x00]);
                f.extend_from_slice(&wlan_qos(ip));
                f
            },
        },
        Wrap {
            name: "prism",
            linktype: PRISM,
            frame: |ip| {
                let mut f = vec![0u8; 144];
                f[..4].copy_from_slice(&0x44u32.to_le_bytes());
                f[4..8].copy_from_slice(&144u32.to_le_bytes());
                f.extend_from_slice(&wlan_data(ip));
                f
            },
        },
        Wrap {
            name: "avs",
            linktype: AVS,
            frame: |ip| {
                let mut f = vec![0u8; 64];
                f[..4].copy_from_slice(&0x8021_1001u32.to_be_bytes());
                f[4..8].copy_from_slice(&64u32.to_be_bytes());
                f.extend_from_slice(&wlan_qos(ip));
                f
            },
        },
    ]);
}

#[test]
fn nflog_ppp_pppoe_and_mpls_agree_with_tshark() {
    run(&[
        Wrap {
            name: "nflog",
            linktype: NFLOG,
            // AF_INET, version 0, resource 0; a packet header attribute, then the payload.
            frame: |ip| {
                let mut f = vec![2, 0, 0, 0];
                f.extend_from_slice(&[8, 0, 1, 0, 0x08, 0x00, 3, 0]);
                f.extend_from_slice(&((4 + ip.len()) as u16).to_le_bytes());
                f.extend_from_slice(&9u16.to_le_bytes());
                f.extend_from_slice(ip);
                f.resize(f.len().next_multiple_of(4), 0);
                f
            },
        },
        Wrap {
            name: "ppp",
            linktype: PPP,
            frame: |ip| [&[0xff, 0x03, 0x00, 0x21][..], ip].concat(),
        },
        Wrap {
            name: "pppoe",
            linktype: ETHERNET,
            frame: |ip| {
                let mut s = vec![0x11, 0x00, 0x12, 0x34];
                s.extend_from_slice(&((2 + ip.len()) as u16).to_be_bytes());
                s.extend_from_slice(&[0x00, 0x21]);
                s.extend_from_slice(ip);
                ethernet(0x8864, &s)
            },
        },
        Wrap {
            name: "mpls_ethernet",
            linktype: ETHERNET,
            // Two labels (16 and 17, the second at the bottom of the stack).
            frame: |ip| ethernet(0x8847, &[&[0, 1, 0, 64, 0, 1, 17, 64][..], ip].concat()),
        },
        Wrap {
            name: "mpls_sll",
            linktype: LINUX_SLL,
            frame: |ip| {
                let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x88, 0x47];
                f.extend_from_slice(&[0, 1, 1, 64]);
                f.extend_from_slice(ip);
                f
            },
        },
    ]);
}

/// A GRE header with these flags and protocol (checksum, key, sequence number zeroed).
fn gre(flags: u16, protocol: u16, rest: &[u8]) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&protocol.to_be_bytes());
    for bit in [0x8000u16, 0x2000, 0x1000] {
        if flags & bit != 0 {
            g.extend_from_slice(&[0, 0, 0, 1]);
        }
    }
    g.extend_from_slice(rest);
    g
}

/// The packet in an inner Ethernet frame.
fn inner_ethernet(ip: &[u8]) -> Vec<u8> {
    ethernet(ip_ethertype(ip), ip)
}

#[test]
fn tunnels_agree_with_tshark() {
    run(&[
        Wrap {
            name: "ipip",
            linktype: RAW,
            frame: |ip| ipv4(4, ip),
        },
        Wrap {
            name: "ip4in6",
            linktype: RAW,
            frame: |ip| ipv6(4, ip),
        },
        Wrap {
            name: "ip6in4",
            linktype: ETHERNET,
            frame: |ip| ethernet(0x0800, &ipv4(41, &to_ipv6(ip))),
        },
        Wrap {
            name: "gre",
            linktype: ETHERNET,
            frame: |ip| ethernet(0x0800, &ipv4(47, &gre(0, 0x0800, ip))),
        },
        Wrap {
            name: "gre_teb_key",
            linktype: ETHERNET,
            frame: |ip| ethernet(0x0800, &ipv4(47, &gre(0x2000, 0x6558, &inner_ethernet(ip)))),
        },
        Wrap {
            name: "erspan2",
            linktype: ETHERNET,
            // Version 1, VLAN 0, session 7; index 0.
            frame: |ip| {
                let e = [&[0x10, 0, 0, 7, 0, 0, 0, 0][..], &inner_ethernet(ip)].concat();
                ethernet(0x0800, &ipv4(47, &gre(0x1000, 0x88be, &e)))
            },
        },
        Wrap {
            name: "erspan3",
            linktype: ETHERNET,
            // Version 2, session 7, a timestamp, frame type 0 (Ethernet), no subheader.
            frame: |ip| {
                let h = [0x20, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0];
                let e = [&h[..], &inner_ethernet(ip)].concat();
                ethernet(0x0800, &ipv4(47, &gre(0x1000, 0x22eb, &e)))
            },
        },
        Wrap {
            name: "vxlan",
            linktype: ETHERNET,
            frame: |ip| {
                let v = [&[0x08, 0, 0, 0, 0, 0, 42, 0][..], &inner_ethernet(ip)].concat();
                ethernet(0x0800, &ipv4(17, &udp(4789, &v)))
            },
        },
        Wrap {
            name: "geneve",
            linktype: ETHERNET,
            // Version 0, one 4-byte word of options (class 0x0101, type 1, length 0).
            frame: |ip| {
                let g = [
                    &[0x01, 0, 0x65, 0x58, 0, 0, 42, 0, 0x01, 0x01, 0x01, 0x00][..],
                    &inner_ethernet(ip),
                ]
                .concat();
                ethernet(0x86dd, &ipv6(17, &udp(6081, &g)))
            },
        },
    ]);
}

#[test]
fn fragmented_datagrams_of_both_families_agree_with_tshark() {
    if !common::have("tshark") {
        eprintln!("skipped: tshark (the reference decoder) is not installed");
        return;
    }
    for v6 in [false, true] {
        let mut packets = Vec::new();
        for (i, (s, u, ip)) in sample_ip_packets().into_iter().enumerate() {
            let (frags, ethertype) = if v6 {
                (fragment_v6(&to_ipv6(&ip), 1000 + i as u32), 0x86dd)
            } else {
                (fragment_v4(&ip, 1000 + i as u16), 0x0800)
            };
            packets.extend(frags.iter().map(|f| (s, u, ethernet(ethertype, f))));
        }
        let name = if v6 { "fragments_v6" } else { "fragments_v4" };
        let stderr = agrees(name, ETHERNET, packets);
        // The 39 packets with 48 payload bytes or more are cut in three; in IPv6 the other
        // 81 are atomic fragments (a fragment header, one piece).
        let counts = if v6 { "198 in, 120" } else { "117 in, 39" };
        assert!(
            stderr.contains(&format!(
                "IP fragments: {counts} datagrams reassembled, 0 timed out, 0 dropped at limits, 312 overlapping bytes ignored"
            )),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn an_unsupported_link_type_is_named_once_and_skips_are_counted_by_reason() {
    let dir = common::temp_dir();
    let user0 = dir.path().join("user0.pcap");
    write_pcap(&user0, 147, &[(1, 0, vec![1, 2, 3]), (1, 1, vec![4, 5, 6])]);
    let (code, _, stderr) = common::capture(&["-r", user0.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.matches("link type 147 (USER0)").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped: 2 of an unsupported link type"),
        "{stderr}"
    );

    // An ARP frame, a frame cut inside its IP header by the snap length, and one whose IP
    // header lies about its length.
    let ip = &sample_ip_packets()[0].2;
    let arp = (1, 0, ethernet(0x0806, &[0; 28]));
    let mut cut = (1, 1, ethernet(0x0800, &ip[..10]));
    let mut liar = ethernet(0x0800, ip);
    liar[14] = 0x4f; // a 60-byte header in a shorter packet
    let dir_file = dir.path().join("reasons.pcap");
    write_pcap(&dir_file, ETHERNET, &[arp, cut.clone(), (1, 2, liar)]);
    // Mark the cut frame's wire length as longer than what was captured.
    let mut bytes = std::fs::read(&dir_file).unwrap();
    let second = 24 + 16 + 14 + 28;
    bytes[second + 12..second + 16].copy_from_slice(&1500u32.to_le_bytes());
    std::fs::write(&dir_file, bytes).unwrap();
    cut.2.clear();
    let (code, _, stderr) = common::capture(&["-r", dir_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("skipped: 0 of an unsupported link type, 1 not IP, 1 truncated by the snap length, 1 malformed"),
        "{stderr}"
    );
}
