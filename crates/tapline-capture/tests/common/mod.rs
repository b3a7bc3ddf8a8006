//! Helpers shared by the integration tests: synthetic captures written by hand.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

use etherparse::PacketBuilder;

/// The client's address in the test captures.
pub const CLIENT: [u8; 4] = [10, 0, 0, 1];
/// The server's address in the test captures.
pub const SERVER: [u8; 4] = [10, 0, 0, 2];

/// Writes a classic little-endian Ethernet pcap.
#[derive(Default)]
pub struct PcapFile(Vec<u8>);

impl PcapFile {
    /// An empty capture (just the file header).
    pub fn new() -> Self {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&262_144u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        PcapFile(b)
    }

    /// Adds `frame` captured `micros` µs after the epoch.
    pub fn frame(&mut self, micros: u64, frame: &[u8]) {
        self.0
            .extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        self.0
            .extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        self.0
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0.extend_from_slice(frame);
    }

    /// Writes the capture under the temp directory as `name`.
    pub fn save(&self, name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tapline-flows-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, &self.0).unwrap();
        path
    }
}

/// A TCP segment from `src` to `dst` with these flags (`S`, `A`, `F`, `R`, `P`).
pub fn tcp(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 65535);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}
