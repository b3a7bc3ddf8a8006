//! The bytes of a `-w` file: libpcap's classic format or pcapng, little-endian, microsecond
//! timestamps. Written here rather than by libpcap, which cannot write pcapng, cannot say how
//! many bytes a file holds without flushing it, and leaves a file behind only when dropped.

use std::io::{self, Write};

use crate::stats::KernelStats;

/// A `-w` file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// libpcap's classic savefile (tcpdump's `-w`).
    #[default]
    Pcap,
    /// pcapng: a section and interface description, enhanced packet blocks, and interface
    /// statistics (received, kernel and interface drops) when the file closes.
    Pcapng,
}

/// What each file says about where its packets come from.
#[derive(Debug, Clone)]
pub(crate) struct Interface {
    /// The LINKTYPE_ number.
    pub linktype: i32,
    /// The snap length.
    pub snaplen: u32,
    /// The interface's name (live captures): pcapng's `if_name`.
    pub name: Option<String>,
    /// The BPF filter: pcapng's `if_filter`.
    pub filter: Option<String>,
}

/// A captured packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    /// Capture time, microseconds since the epoch.
    pub micros: u64,
    /// Length on the wire.
    pub orig_len: u32,
    /// The bytes kept.
    pub data: &'a [u8],
}

/// What a pcapng file records about itself when it closes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closing {
    /// When the file was opened and closed, microseconds since the epoch.
    pub opened: u64,
    /// See `opened`.
    pub closed: u64,
    /// Packets written to this file.
    pub packets: u64,
    /// libpcap's counters since the capture started (live captures).
    pub kernel: Option<KernelStats>,
}

const PCAP_MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const IF_FILTER: u16 = 11;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;
const ISB_OSDROP: u16 = 7;

impl FileFormat {
    /// Writes the file's header; returns its length.
    pub(crate) fn header(self, iface: &Interface, out: &mut impl Write) -> io::Result<u64> {
        match self {
            FileFormat::Pcap => {
                let mut header = Vec::with_capacity(24);
                header.extend_from_slice(&PCAP_MAGIC_MICROS.to_le_bytes());
                header.extend_from_slice(&2u16.to_le_bytes());
                header.extend_from_slice(&4u16.to_le_bytes());
                header.extend_from_slice(&[0; 8]); // thiszone, sigfigs
                header.extend_from_slice(&iface.snaplen.to_le_bytes());
                header.extend_from_slice(&(iface.linktype as u32).to_le_bytes());
                out.write_all(&header)?;
                Ok(header.len() as u64)
            }
            FileFormat::Pcapng => {
                let mut shb = Vec::new();
                shb.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
                shb.extend_from_slice(&1u16.to_le_bytes());
                shb.extend_from_slice(&0u16.to_le_bytes());
                shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not known
                let app = concat!("tapline ", env!("CARGO_PKG_VERSION"));
                option(&mut shb, SHB_USERAPPL, app.as_bytes());
                option(&mut shb, OPT_END, &[]);
                let mut idb = Vec::new();
                idb.extend_from_slice(&(iface.linktype as u16).to_le_bytes());
                idb.extend_from_slice(&0u16.to_le_bytes());
                idb.extend_from_slice(&iface.snaplen.to_le_bytes());
                if let Some(name) = &iface.name {
                    option(&mut idb, IF_NAME, name.as_bytes());
                }
                if let Some(filter) = &iface.filter {
                    // The first byte 0: the filter is libpcap's text.
                    let value = [&[0u8][..], filter.as_bytes()].concat();
                    option(&mut idb, IF_FILTER, &value);
                }
                option(&mut idb, IF_TSRESOL, &[6]);
                option(&mut idb, OPT_END, &[]);
                Ok(block(out, SHB, &shb)? + block(out, IDB, &idb)?)
            }
        }
    }

    /// Writes one packet; returns the bytes written.
    pub(crate) fn record(self, record: &Record<'_>, out: &mut impl Write) -> io::Result<u64> {
        let caplen = record.data.len() as u32;
        match self {
            FileFormat::Pcap => {
                let mut head = [0u8; 16];
                let secs = (record.micros / 1_000_000) as u32;
                let micros = (record.micros % 1_000_000) as u32;
                head[0..4].copy_from_slice(&secs.to_le_bytes());
                head[4..8].copy_from_slice(&micros.to_le_bytes());
                head[8..12].copy_from_slice(&caplen.to_le_bytes());
                head[12..16].copy_from_slice(&record.orig_len.to_le_bytes());
                out.write_all(&head)?;
                out.write_all(record.data)?;
                Ok(16 + u64::from(caplen))
            }
            FileFormat::Pcapng => {
                let pad = padding(record.data.len());
                let total = 32 + caplen + pad as u32;
                let mut head = [0u8; 28];
                head[0..4].copy_from_slice(&EPB.to_le_bytes());
                head[4..8].copy_from_slice(&total.to_le_bytes());
                // interface 0 in bytes 8..12
                head[12..20].copy_from_slice(&split_u64(record.micros));
                head[20..24].copy_from_slice(&caplen.to_le_bytes());
                head[24..28].copy_from_slice(&record.orig_len.to_le_bytes());
                out.write_all(&head)?;
                out.write_all(record.data)?;
                out.write_all(&[0u8; 3][..pad])?;
                out.write_all(&total.to_le_bytes())?;
                Ok(u64::from(total))
            }
        }
    }

    /// Writes what a file says when it closes: for pcapng an interface statistics block
    /// (the file's time span; with live counters, received, kernel and interface drops, and
    /// a comment saying the same in words); nothing for pcap. Returns the bytes written.
    pub(crate) fn closing(self, closing: &Closing, out: &mut impl Write) -> io::Result<u64> {
        if self == FileFormat::Pcap {
            return Ok(0);
        }
        let mut isb = Vec::new();
        isb.extend_from_slice(&0u32.to_le_bytes());
        isb.extend_from_slice(&split_u64(closing.closed));
        if let Some(k) = &closing.kernel {
            let comment = format!(
                "tapline: {} packets in this file; since the capture started the kernel \
                 received {}, dropped {} (kernel drops), interface dropped {}",
                closing.packets, k.received, k.dropped, k.if_dropped
            );
            option(&mut isb, OPT_COMMENT, comment.as_bytes());
        }
        option(&mut isb, ISB_STARTTIME, &split_u64(closing.opened));
        option(&mut isb, ISB_ENDTIME, &split_u64(closing.closed));
        if let Some(k) = &closing.kernel {
            option(&mut isb, ISB_IFRECV, &k.received.to_le_bytes());
            option(&mut isb, ISB_IFDROP, &k.if_dropped.to_le_bytes());
            option(&mut isb, ISB_OSDROP, &k.dropped.to_le_bytes());
        }
        option(&mut isb, OPT_END, &[]);
        block(out, ISB, &isb)
    }
}

/// A 64-bit pcapng timestamp or counter pair: the high 32 bits, then the low.
fn split_u64(value: u64) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&((value >> 32) as u32).to_le_bytes());
    bytes[4..].copy_from_slice(&(value as u32).to_le_bytes());
    bytes
}

/// Bytes that pad `len` to a multiple of 4.
fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends a pcapng option (code, length, value padded to 4 bytes).
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    body.extend_from_slice(&[0u8; 3][..padding(value.len())]);
}

/// Writes a pcapng block around `body` (a multiple of 4 bytes); returns its length.
fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<u64> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())?;
    Ok(u64::from(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> Interface {
        Interface {
            linktype: 1,
            snaplen: 262_144,
            name: Some("lo".into()),
            filter: Some("tcp port 80".into()),
        }
    }

    /// Writes a header, two packets of odd lengths and the closing; checks the byte counts
    /// and reads the file back with libpcap.
    fn round_trip(format: FileFormat) {
        let path =
            std::env::temp_dir().join(format!("tapline-format-{}-{format:?}", std::process::id()));
        let mut bytes = Vec::new();
        let mut counted = format.header(&iface(), &mut bytes).unwrap();
        let frames: [&[u8]; 2] = [&[0xaa; 61], &[0xbb; 14]];
        for (i, data) in frames.iter().enumerate() {
            let record = Record {
                micros: 1_765_000_000_123_456 + i as u64,
                orig_len: 1500,
                data,
            };
            counted += format.record(&record, &mut bytes).unwrap();
        }
        let closing = Closing {
            opened: 1,
            closed: 2,
            packets: 2,
            kernel: Some(KernelStats {
                received: 9,
                dropped: 3,
                if_dropped: 1,
            }),
        };
        counted += format.closing(&closing, &mut bytes).unwrap();
        assert_eq!(counted, bytes.len() as u64);
        std::fs::write(&path, &bytes).unwrap();
        let mut cap = pcap::Capture::from_file(&path).unwrap();
        assert_eq!(cap.get_datalink().0, 1);
        for (i, data) in frames.iter().enumerate() {
            let packet = cap.next_packet().unwrap();
            assert_eq!(packet.data, *data);
            assert_eq!(packet.header.len, 1500);
            assert_eq!(packet.header.ts.tv_sec, 1_765_000_000);
            assert_eq!(packet.header.ts.tv_usec, 123_456 + i as i64);
        }
        assert!(matches!(cap.next_packet(), Err(pcap::Error::NoMorePackets)));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn pcap_files_read_back() {
        round_trip(FileFormat::Pcap);
    }

    #[test]
    fn pcapng_files_read_back() {
        round_trip(FileFormat::Pcapng);
    }

    #[test]
    fn pcapng_options_are_padded() {
        let mut body = Vec::new();
        option(&mut body, IF_NAME, b"eth0x");
        assert_eq!(body.len(), 4 + 8);
        assert_eq!(&body[..4], &[2, 0, 5, 0]);
        assert_eq!(split_u64(0x1_0000_0002), [1, 0, 0, 0, 2, 0, 0, 0]);
    }
}
