//! The capture library against real captures: file source → decode → reassembly → pipeline.
//! Each flow's reassembled bytes, per direction, must match what tshark's `follow,tcp,raw`
//! reported (the `.expected.txt` beside each capture in ../shared/pcaps), also after the
//! capture is rewritten with packets reordered and duplicated. Damaged files deliver their
//! valid packets and report the bad record; none panics.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tapline_capture::{Capture, CaptureConfig, CaptureError, Limits, RunOutcome, SourceSpec};
use tapline_core::{Event, EventKind, EventSink, Pipeline, Side};
use tapline_decode::packet::{decode, tcp_flags, Decoded, LinkType, Transport};
use tapline_decode::DecodeConfig;

fn shared_pcaps() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pcaps");
    if dir.is_dir() {
        Some(dir)
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "../shared/pcaps must sit beside the repo in CI"
        );
        eprintln!("SKIP: ../shared/pcaps is absent; skipping");
        None
    }
}

/// One flow as the pipeline saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    from_client: Vec<u8>,
    from_server: Vec<u8>,
    ended: Option<String>,
    gaps: u64,
    end_bytes: (u64, u64),
}

/// A sink that keeps every TCP flow's chunks.
#[derive(Default)]
struct Collect(Mutex<HashMap<u64, Seen>>);

impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        let Some(flow) = &event.flow else { return };
        if flow.protocol == tapline_core::Protocol::Udp {
            return;
        }
        let mut flows = self.0.lock().unwrap();
        let seen = flows.entry(flow.id.0).or_default();
        match &event.kind {
            EventKind::FlowStart => {
                assert!(seen.client.is_none(), "flow_start twice for {}", flow.id);
                seen.client = Some(flow.client);
                seen.server = Some(flow.server);
            }
            EventKind::Chunk(c) => {
                assert!(seen.ended.is_none(), "chunk after flow_end");
                match c.from {
                    Side::Client => seen.from_client.extend_from_slice(&c.data),
                    Side::Server => seen.from_server.extend_from_slice(&c.data),
                }
            }
            EventKind::Gap { .. } => seen.gaps += 1,
            EventKind::FlowEnd { stats, end, .. } => {
                assert!(seen.ended.is_none(), "flow_end twice");
                seen.ended = Some(end.as_str().to_string());
                seen.end_bytes = (stats.bytes_from_client, stats.bytes_from_server);
            }
            _ => {}
        }
    }

    fn wants_chunks(&self) -> bool {
        true
    }
}

fn run_file(path: &Path, workers: usize) -> (Vec<Seen>, RunOutcome) {
    let config = CaptureConfig {
        source: SourceSpec::File(path.to_path_buf()),
        filter: None,
        count: None,
        write: None,
        workers,
        limits: Limits::default(),
        decode: DecodeConfig::default(),
    };
    let capture = Capture::open(config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sink = Arc::new(Collect::default());
    let pipeline = Pipeline::new(Vec::new(), sink.clone());
    let outcome = capture
        .run(&pipeline, &AtomicBool::new(false))
        .expect("run");
    let flows = sink.0.lock().unwrap();
    let mut seen: Vec<Seen> = flows.values().cloned().collect();
    seen.sort_by_key(|s| (s.client, s.server));
    (seen, outcome)
}

/// One `stream N:` line of an `.expected.txt`: endpoints, then size and SHA-256 each way.
#[derive(Debug)]
struct Expected {
    a: SocketAddr,
    b: SocketAddr,
    a_to_b: (usize, String),
    b_to_a: (usize, String),
}

fn expected_streams(path: &Path) -> Vec<Expected> {
    let text = fs::read_to_string(format!("{}.expected.txt", path.display())).unwrap();
    text.lines()
        .filter(|l| l.starts_with("stream "))
        .map(|line| {
            let (_, rest) = line.split_once(": ").unwrap();
            let (left, right) = rest.split_once(" | ").unwrap();
            let half = |s: &str| {
                // "A -> B: N bytes sha256=H"
                let (ends, facts) = s.split_once(": ").unwrap();
                let (from, to) = ends.split_once(" -> ").unwrap();
                let mut words = facts.split_whitespace();
                let n: usize = words.next().unwrap().parse().unwrap();
                let hash = facts.split("sha256=").nth(1).unwrap().trim().to_string();
                (
                    from.parse::<SocketAddr>().unwrap(),
                    to.parse::<SocketAddr>().unwrap(),
                    n,
                    hash,
                )
            };
            let (a, b, n1, h1) = half(left);
            let (_, _, n2, h2) = half(right);
            Expected {
                a,
                b,
                a_to_b: (n1, h1),
                b_to_a: (n2, h2),
            }
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Asserts that the flows match tshark's streams one to one, byte for byte.
fn assert_matches(name: &str, seen: &[Seen], expected: &[Expected]) {
    assert_eq!(
        seen.len(),
        expected.len(),
        "{name}: {} flows, tshark has {} streams: {seen:#?}",
        seen.len(),
        expected.len()
    );
    for e in expected {
        let flow = seen
            .iter()
            .find(|s| {
                (s.client == Some(e.a) && s.server == Some(e.b))
                    || (s.client == Some(e.b) && s.server == Some(e.a))
            })
            .unwrap_or_else(|| panic!("{name}: no flow {} <-> {}", e.a, e.b));
        let (a_bytes, b_bytes) = if flow.client == Some(e.a) {
            (&flow.from_client, &flow.from_server)
        } else {
            (&flow.from_server, &flow.from_client)
        };
        for (dir, got, (n, hash)) in [
            (format!("{} -> {}", e.a, e.b), a_bytes, &e.a_to_b),
            (format!("{} -> {}", e.b, e.a), b_bytes, &e.b_to_a),
        ] {
            assert_eq!(got.len(), *n, "{name} {dir}: byte count");
            assert_eq!(
                &sha(got),
                hash,
                "{name} {dir}: SHA-256 of the reassembled bytes"
            );
        }
        assert!(flow.ended.is_some(), "{name}: every flow ends");
        assert_eq!(
            flow.end_bytes,
            (flow.from_client.len() as u64, flow.from_server.len() as u64),
            "{name}: flow_end totals are the delivered bytes"
        );
    }
}

/// tshark's count of segments it knows were not captured (`tcp.analysis.lost_segment`).
fn lost_segments(path: &Path) -> u64 {
    let text = fs::read_to_string(format!("{}.expected.txt", path.display())).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("lost-segment frames"))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Holes are gaps exactly where tshark saw segments missing, and nowhere else.
fn assert_gaps(name: &str, seen: &[Seen], path: &Path) {
    let gaps: u64 = seen.iter().map(|s| s.gaps).sum();
    assert_eq!(gaps, lost_segments(path), "{name}: gaps reported");
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.ends_with(".pcap") || n.ends_with(".pcapng")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no captures in {}", dir.display());
    files
}

#[test]
fn every_shared_capture_reassembles_like_tshark() {
    let Some(dir) = shared_pcaps() else { return };
    for path in captures(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for workers in [1, 3] {
            let (seen, outcome) = run_file(&path, workers);
            assert_matches(&name, &seen, &expected_streams(&path));
            assert_gaps(&name, &seen, &path);
            assert_eq!(
                outcome.source_error.is_some(),
                name.starts_with("broken-"),
                "{name}: only the damaged files end in a read error: {:?}",
                outcome.source_error
            );
        }
    }
}

#[test]
fn damaged_files_deliver_their_valid_packets() {
    let Some(dir) = shared_pcaps() else { return };
    let (_, outcome) = run_file(&dir.join("broken-corrupt-record-header.pcap"), 2);
    assert_eq!(outcome.stats.packets, 6);
    let message = outcome.source_error.expect("a read error");
    assert!(message.contains("4325376"), "{message}");

    let (seen, outcome) = run_file(&dir.join("broken-fuzzed.pcap"), 2);
    assert!(seen.is_empty());
    assert_eq!(outcome.stats.packets, 1);
    assert_eq!(
        outcome.stats.skipped.malformed, 1,
        "TCP data offset 0 is malformed"
    );

    // A file cut inside a record: the complete records before it count.
    let tmp = tempdir();
    let cut = tmp.join("cut.pcap");
    let whole = fs::read(dir.join("pgsql-simple-query-scram-errors.pcap")).unwrap();
    fs::write(&cut, &whole[..5000]).unwrap();
    let (seen, outcome) = run_file(&cut, 2);
    assert_eq!(outcome.stats.packets, 45);
    assert!(outcome.source_error.is_some());
    assert_eq!(seen.len(), 1);

    // Garbage and a wrong magic number are refused at open, as usage errors.
    for (file, bytes) in [
        (
            "garbage.pcap",
            b"this is not a capture file at all, no magic".to_vec(),
        ),
        ("magic.pcap", {
            let mut b = whole.clone();
            b[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            b
        }),
        ("empty.pcap", Vec::new()),
    ] {
        let path = tmp.join(file);
        fs::write(&path, bytes).unwrap();
        let err = Capture::open(CaptureConfig {
            source: SourceSpec::File(path),
            filter: None,
            count: None,
            write: None,
            workers: 1,
            limits: Limits::default(),
            decode: DecodeConfig::default(),
        })
        .err()
        .unwrap_or_else(|| panic!("{file} opened"));
        assert!(matches!(err, CaptureError::File { .. }), "{file}: {err}");
        assert!(err.is_usage());
    }
    let _ = fs::remove_dir_all(tmp);
}

#[test]
fn reordered_and_duplicated_packets_reassemble_the_same() {
    let Some(dir) = shared_pcaps() else { return };
    let tmp = tempdir();
    for path in captures(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("broken-") {
            continue;
        }
        let shuffled = tmp.join(format!("{name}.shuffled.pcap"));
        let moved = rewrite_shuffled(&path, &shuffled);
        let (seen, _) = run_file(&shuffled, 2);
        let name = format!("{name} (reordered, duplicated)");
        assert_matches(&name, &seen, &expected_streams(&path));
        assert_gaps(&name, &seen, &path);
        assert!(
            moved > 0 || seen.is_empty(),
            "{name}: the rewrite moved nothing"
        );
    }
    let _ = fs::remove_dir_all(tmp);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tapline-capture-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Rewrites `from` (pcap or pcapng) as a classic pcap in which every third pair of
/// neighbouring packets is swapped and every fifth packet is sent twice. Resets stay where
/// they were (a reset that overtakes data ends the connection before it, in any tool).
/// Returns how many packets moved.
fn rewrite_shuffled(from: &Path, to: &Path) -> usize {
    let mut cap = pcap::Capture::from_file(from).unwrap();
    let linktype = cap.get_datalink().0;
    let link = LinkType::from_linktype(linktype).unwrap();
    let mut packets: Vec<(i64, i64, u32, Vec<u8>)> = Vec::new();
    while let Ok(p) = cap.next_packet() {
        packets.push((
            p.header.ts.tv_sec,
            p.header.ts.tv_usec,
            p.header.len,
            p.data.to_vec(),
        ));
    }
    let is_rst = |frame: &[u8]| match decode(link, frame) {
        Decoded::Ip(ip) => {
            matches!(ip.transport, Transport::Tcp(t) if t.flags & tcp_flags::RST != 0)
        }
        _ => false,
    };
    let mut moved = 0;
    let mut i = 1;
    while i + 1 < packets.len() {
        if !is_rst(&packets[i].3) && !is_rst(&packets[i + 1].3) {
            packets.swap(i, i + 1);
            moved += 2;
        }
        i += 3;
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&(linktype as u32).to_le_bytes());
    for (n, (sec, usec, len, data)) in packets.iter().enumerate() {
        let copies = if n % 5 == 4 { 2 } else { 1 };
        for _ in 0..copies {
            out.extend_from_slice(&(*sec as u32).to_le_bytes());
            out.extend_from_slice(&(*usec as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(data);
        }
    }
    fs::write(to, out).unwrap();
    moved
}

/// Rewrites a little-endian microsecond pcap as big-endian with nanosecond timestamps.
fn rewrite_big_endian_nanos(from: &Path, to: &Path) {
    let data = fs::read(from).unwrap();
    assert_eq!(data[..4], 0xa1b2_c3d4u32.to_le_bytes(), "a LE µs pcap");
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes(data[at..at + 2].try_into().unwrap());
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&0xa1b2_3c4du32.to_be_bytes());
    out.extend_from_slice(&u16_at(4).to_be_bytes());
    out.extend_from_slice(&u16_at(6).to_be_bytes());
    for field in [8, 12, 16, 20] {
        out.extend_from_slice(&u32_at(field).to_be_bytes());
    }
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(at + 8) as usize;
        out.extend_from_slice(&u32_at(at).to_be_bytes());
        out.extend_from_slice(&(u32_at(at + 4) * 1000 + 7).to_be_bytes());
        out.extend_from_slice(&u32_at(at + 8).to_be_bytes());
        out.extend_from_slice(&u32_at(at + 12).to_be_bytes());
        out.extend_from_slice(&data[at + 16..at + 16 + incl]);
        at += 16 + incl;
    }
    fs::write(to, out).unwrap();
}

#[test]
fn big_endian_nanosecond_pcaps_read_the_same() {
    let Some(dir) = shared_pcaps() else { return };
    let tmp = tempdir();
    for name in [
        "pgsql-simple-query-scram-errors.pcap",
        "http-retrans-ooo.pcap",
    ] {
        let path = dir.join(name);
        let be = tmp.join(format!("{name}.be-ns.pcap"));
        rewrite_big_endian_nanos(&path, &be);
        let (seen, outcome) = run_file(&be, 2);
        assert!(outcome.source_error.is_none(), "{:?}", outcome.source_error);
        assert_matches(
            &format!("{name} (big-endian, ns)"),
            &seen,
            &expected_streams(&path),
        );
    }
    let _ = fs::remove_dir_all(tmp);
}
