//! Captures written by the tests: the frames of `samples/sample.pcap` (real HTTP and
//! PostgreSQL over loopback) re-wrapped in other link layers and tunnels, or fragmented,
//! and written as classic pcap files for tapline and tshark to read.
#![allow(dead_code)]

use std::path::Path;

/// One captured packet: seconds, microseconds, bytes.
pub type Packet = (u32, u32, Vec<u8>);

/// The packets of a little-endian microsecond pcap file (as tcpdump writes on x86).
pub fn read_pcap(path: &Path) -> Vec<Packet> {
    let data = std::fs::read(path).expect("read pcap");
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(at + 8) as usize;
        packets.push((
            u32_at(at),
            u32_at(at + 4),
            data[at + 16..at + 16 + caplen].to_vec(),
        ));
        at += 16 + caplen;
    }
    packets
}

/// Writes `packets` as a pcap file of link type `linktype` (wire length = captured length).
pub fn write_pcap(path: &Path, linktype: u32, packets: &[Packet]) {
    let mut out = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, linktype] {
        if word == 0x0004_0002 {
            out.extend_from_slice(&2u16.to_le_bytes());
            out.extend_from_slice(&4u16.to_le_bytes());
        } else {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    for (secs, micros, frame) in packets {
        for word in [*secs, *micros, frame.len() as u32, frame.len() as u32] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// The IP packets of the bundled sample (its Ethernet headers removed).
pub fn sample_ip_packets() -> Vec<Packet> {
    let path = crate::common::repo_root().join("samples/sample.pcap");
    read_pcap(&path)
        .into_iter()
        .map(|(s, u, frame)| (s, u, frame[14..].to_vec()))
        .collect()
}

/// An Ethernet II header with this EtherType.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The EtherType of an IP packet.
pub fn ip_ethertype(ip: &[u8]) -> u16 {
    if ip[0] >> 4 == 6 {
        0x86dd
    } else {
        0x0800
    }
}

/// An outer IPv4 header (10.1.0.1 → 10.1.0.2) carrying `payload` as protocol `proto`.
pub fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2]);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An outer IPv6 header (fd00::1 → fd00::2) carrying `payload` with this next header.
pub fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    for last in [1u8, 2] {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        h.extend_from_slice(&a);
    }
    h.extend_from_slice(payload);
    h
}

/// A UDP header (no checksum) from port 50000 to `dport`.
pub fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = 50000u16.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// The same IPv4 packet as IPv6 (::1 to ::1, as the sample is loopback traffic; transport
/// checksums are left as they were, which neither tapline nor tshark checks).
pub fn to_ipv6(ip: &[u8]) -> Vec<u8> {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let payload = &ip[ihl..total];
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[ip[9], 64]);
    let mut loopback = [0u8; 16];
    loopback[15] = 1;
    h.extend_from_slice(&loopback);
    h.extend_from_slice(&loopback);
    h.extend_from_slice(payload);
    h
}

/// The IPv4 header checksum.
pub fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Payload cuts of a fragmented datagram of `len` payload bytes, in the order sent: the
/// last piece first, then the first, then a middle piece that overlaps the first by 8
/// bytes. Short payloads are one piece.
fn pieces(len: usize) -> Vec<(usize, usize)> {
    if len < 48 {
        return vec![(0, len)];
    }
    let a = (len / 3) & !7;
    let b = (2 * len / 3) & !7;
    vec![(b, len), (0, a), (a - 8, b)]
}

/// An IPv4 packet cut into fragments (see [`pieces`]), identification `id`.
pub fn fragment_v4(ip: &[u8], id: u16) -> Vec<Vec<u8>> {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let payload = &ip[ihl..total];
    pieces(payload.len())
        .into_iter()
        .map(|(start, end)| {
            let mut f = ip[..ihl].to_vec();
            f.extend_from_slice(&payload[start..end]);
            let len = f.len() as u16;
            f[2..4].copy_from_slice(&len.to_be_bytes());
            f[4..6].copy_from_slice(&id.to_be_bytes());
            let more = if end < payload.len() { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&((start / 8) as u16 | more).to_be_bytes());
            f[10..12].fill(0);
            let sum = checksum(&f[..ihl]);
            f[10..12].copy_from_slice(&sum.to_be_bytes());
            f
        })
        .collect()
}

/// An IPv6 packet (no extension headers) cut into fragments (see [`pieces`]).
pub fn fragment_v6(ip: &[u8], id: u32) -> Vec<Vec<u8>> {
    let payload = &ip[40..];
    pieces(payload.len())
        .into_iter()
        .map(|(start, end)| {
            let mut f = ip[..40].to_vec();
            f[6] = 44;
            f.extend_from_slice(&[ip[6], 0]);
            let more = u16::from(end < payload.len());
            f.extend_from_slice(&(start as u16 | more).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&payload[start..end]);
            let len = (f.len() - 40) as u16;
            f[4..6].copy_from_slice(&len.to_be_bytes());
            f
        })
        .collect()
}
