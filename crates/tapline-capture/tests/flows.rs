//! Flow tracking on synthetic captures written here: idle timeouts in packet time, the
//! --max-flows bound, packet events only for stages that ask, IPv6 extension headers, UDP,
//! port reuse, mid-stream pickup and the total buffer bound.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etherparse::PacketBuilder;
use tapline_capture::{Capture, CaptureConfig, Limits, RunOutcome, SourceSpec};
use tapline_core::{
    BoxFuture, Event, EventKind, EventSink, Flow, HookResult, Interest, Pipeline, Protocol, Side,
    Stage, StageCounters,
};
use tapline_decode::DecodeConfig;

mod common;
use common::{tcp, PcapFile, CLIENT, SERVER};

/// Handshake, one request and one answer on `cport` → `sport`, starting at `t` µs.
fn exchange(pcap: &mut PcapFile, t: u64, cport: u16, sport: u16, fin: bool) {
    let c = (CLIENT, cport);
    let s = (SERVER, sport);
    pcap.frame(t, &tcp(c, s, 100, 0, "S", b""));
    pcap.frame(t + 1, &tcp(s, c, 500, 101, "SA", b""));
    pcap.frame(t + 2, &tcp(c, s, 101, 501, "A", b""));
    pcap.frame(t + 3, &tcp(c, s, 101, 501, "PA", b"ping"));
    pcap.frame(t + 4, &tcp(s, c, 501, 105, "PA", b"pong!"));
    if fin {
        pcap.frame(t + 5, &tcp(c, s, 105, 506, "FA", b""));
        pcap.frame(t + 6, &tcp(s, c, 506, 106, "FA", b""));
        pcap.frame(t + 7, &tcp(c, s, 106, 507, "A", b""));
    }
}

/// What the sink saw, by flow id.
#[derive(Default)]
struct Record {
    events: Mutex<Vec<(u64, String, Option<String>)>>,
    chunks: Mutex<HashMap<(u64, &'static str), Vec<u8>>>,
    flows: Mutex<HashMap<u64, Flow>>,
    packets: AtomicU64,
}

impl EventSink for Record {
    fn emit(&self, event: &Event) {
        let id = event.flow.as_ref().map_or(0, |f| f.id.0);
        if let Some(flow) = &event.flow {
            self.flows.lock().unwrap().insert(id, Flow::clone(flow));
        }
        let detail = match &event.kind {
            EventKind::FlowEnd { end, .. } => Some(end.as_str().to_string()),
            EventKind::Gap { from, len } => Some(format!("{}:{len}", from.as_str())),
            EventKind::Packet(_) => {
                self.packets.fetch_add(1, Ordering::Relaxed);
                None
            }
            EventKind::Chunk(c) => {
                self.chunks
                    .lock()
                    .unwrap()
                    .entry((id, c.from.as_str()))
                    .or_default()
                    .extend_from_slice(&c.data);
                None
            }
            _ => None,
        };
        self.events
            .lock()
            .unwrap()
            .push((id, event.kind_name().to_string(), detail));
    }

    fn wants_chunks(&self) -> bool {
        true
    }
}

impl Record {
    fn kinds(&self, kind: &str) -> Vec<(u64, Option<String>)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| k == kind)
            .map(|(id, _, d)| (*id, d.clone()))
            .collect()
    }
}

/// A stage that wants packets (of flows, and with `loose`, of no flow) and counts them.
struct PacketCounter {
    loose: bool,
    seen: AtomicU64,
    counters: StageCounters,
}

impl Stage for PacketCounter {
    fn name(&self) -> &str {
        "packet-counter"
    }
    fn family(&self) -> &'static str {
        "test"
    }
    fn interest(&self, _flow: &Flow) -> Interest {
        Interest {
            packets: true,
            ..Interest::default()
        }
    }
    fn wants_packets(&self) -> bool {
        self.loose
    }
    fn counters(&self) -> &StageCounters {
        &self.counters
    }
    fn on_event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, HookResult<()>> {
        if matches!(event.kind, EventKind::Packet(_)) {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async { Ok(()) })
    }
}

fn run(
    path: &Path,
    limits: Limits,
    workers: usize,
    stages: Vec<Arc<dyn Stage>>,
) -> (Arc<Record>, RunOutcome) {
    let capture = Capture::open(CaptureConfig {
        source: SourceSpec::File(path.to_path_buf()),
        filter: None,
        count: None,
        write: None,
        workers,
        limits,
        decode: DecodeConfig::default(),
    })
    .unwrap();
    let record = Arc::new(Record::default());
    let pipeline = Pipeline::new(stages, record.clone());
    let outcome = capture.run(&pipeline, &AtomicBool::new(false)).unwrap();
    (record, outcome)
}

#[test]
fn idle_flows_time_out_in_packet_time() {
    let mut pcap = PcapFile::new();
    exchange(&mut pcap, 0, 40000, 7000, false);
    // Another flow keeps the clock going for 10 s of packet time.
    for i in 0..=10u64 {
        let c = (CLIENT, 41000);
        let s = (SERVER, 7001);
        pcap.frame(i * 1_000_000, &tcp(c, s, 1000 + i as u32, 1, "A", b"x"));
    }
    let path = pcap.save("timeout.pcap");
    let limits = Limits {
        flow_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (record, outcome) = run(&path, limits, 2, Vec::new());
    let ends = record.kinds("flow_end");
    assert_eq!(ends.len(), 2);
    assert!(ends.contains(&(1, Some("timeout".into()))), "{ends:?}");
    assert_eq!(outcome.stats.flows, 2);
}

#[test]
fn max_flows_evicts_the_oldest_and_counts_it() {
    let mut pcap = PcapFile::new();
    for i in 0..50u16 {
        exchange(&mut pcap, u64::from(i) * 100, 20000 + i, 7000, false);
    }
    let path = pcap.save("many.pcap");
    let limits = Limits {
        max_flows: 10,
        ..Limits::default()
    };
    let (record, outcome) = run(&path, limits, 1, Vec::new());
    assert_eq!(outcome.stats.flows, 50);
    assert!(outcome.stats.flows_evicted >= 40, "{:?}", outcome.stats);
    assert_eq!(record.kinds("flow_end").len(), 50, "every flow ends once");
    // Evicted flows still delivered what they had.
    assert_eq!(record.chunks.lock().unwrap().len(), 100);
}

#[test]
fn packet_events_only_for_stages_that_want_them() {
    let mut pcap = PcapFile::new();
    exchange(&mut pcap, 0, 40000, 7000, true);
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(CLIENT, SERVER, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"hi")
        .unwrap();
    pcap.frame(10, &icmp);
    let path = pcap.save("packets.pcap");

    let (record, _) = run(&path, Limits::default(), 2, Vec::new());
    assert_eq!(
        record.packets.load(Ordering::Relaxed),
        0,
        "no stage wants packets"
    );

    let flow_only = Arc::new(PacketCounter {
        loose: false,
        seen: AtomicU64::new(0),
        counters: StageCounters::default(),
    });
    let (record, _) = run(&path, Limits::default(), 2, vec![flow_only.clone()]);
    // The last ACK comes after both FINs ended the flow: not one of its packets.
    assert_eq!(
        flow_only.seen.load(Ordering::Relaxed),
        7,
        "the flow's packets"
    );
    assert_eq!(record.packets.load(Ordering::Relaxed), 7);

    let all = Arc::new(PacketCounter {
        loose: true,
        seen: AtomicU64::new(0),
        counters: StageCounters::default(),
    });
    run(&path, Limits::default(), 2, vec![all.clone()]);
    assert_eq!(
        all.seen.load(Ordering::Relaxed),
        9,
        "and the last ACK and the ICMP echo"
    );
}

#[test]
fn ipv6_extension_headers_udp_and_port_reuse() {
    let mut pcap = PcapFile::new();
    // IPv6 TCP with a hop-by-hop options header in front of TCP.
    let c6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    for (t, (src, dst, sp, dp, seq, ack, syn, data)) in [
        (c6, s6, 40000u16, 80u16, 1u32, 0u32, true, &b""[..]),
        (s6, c6, 80, 40000, 9, 2, true, b""),
        (
            c6,
            s6,
            40000,
            80,
            2,
            10,
            false,
            b"GET / HTTP/1.1\r\nHost: v6\r\n\r\n",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(src, dst, 64)
            .tcp(sp, dp, seq, 65535);
        let b = if syn && ack == 0 {
            b.syn()
        } else if syn {
            b.syn().ack(ack)
        } else {
            b.ack(ack)
        };
        let mut f = Vec::new();
        b.write(&mut f, data).unwrap();
        // Insert an 8-byte hop-by-hop header (next header TCP, PadN) after the IPv6 header.
        let ip = 14;
        f[ip + 6] = 0;
        let plen = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) + 8;
        f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
        f.splice(ip + 40..ip + 40, [6, 0, 1, 4, 0, 0, 0, 0]);
        pcap.frame(t as u64, &f);
    }
    // UDP both ways.
    for (t, (src, dst, sp, dp, data)) in [
        (CLIENT, SERVER, 5353u16, 53u16, &b"query"[..]),
        (SERVER, CLIENT, 53, 5353, b"answer"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .udp(sp, dp)
            .write(&mut f, data)
            .unwrap();
        pcap.frame(10 + t as u64, &f);
    }
    // The same ports twice: a closed connection, then a new one with another ISN.
    exchange(&mut pcap, 100, 40001, 7000, true);
    let c = (CLIENT, 40001);
    let s = (SERVER, 7000);
    pcap.frame(200, &tcp(c, s, 90_000, 0, "S", b""));
    pcap.frame(201, &tcp(s, c, 7_000, 90_001, "SA", b""));
    pcap.frame(202, &tcp(c, s, 90_001, 7_001, "PA", b"again"));
    let path = pcap.save("mixed.pcap");

    let (record, outcome) = run(&path, Limits::default(), 2, Vec::new());
    assert_eq!(outcome.stats.flows, 4, "{:?}", outcome.stats);
    let flows = record.flows.lock().unwrap().clone();
    let chunks = record.chunks.lock().unwrap().clone();
    let by_client = |client: &str| {
        flows
            .values()
            .filter(|f| f.client.to_string() == client)
            .map(|f| f.id.0)
            .collect::<Vec<_>>()
    };
    let v6 = by_client("[2001:db8::1]:40000");
    assert_eq!(v6.len(), 1);
    assert_eq!(
        chunks[&(v6[0], "client")],
        b"GET / HTTP/1.1\r\nHost: v6\r\n\r\n"
    );
    assert_eq!(
        flows[&v6[0]].protocol,
        Protocol::Http,
        "decoded from the stream"
    );

    let udp = by_client("10.0.0.1:5353");
    assert_eq!(udp.len(), 1);
    assert_eq!(flows[&udp[0]].protocol, Protocol::Udp);
    assert_eq!(chunks[&(udp[0], "server")], b"answer");

    let mut reused = by_client("10.0.0.1:40001");
    reused.sort();
    assert_eq!(reused.len(), 2, "port reuse starts a new flow");
    assert_eq!(chunks[&(reused[0], "client")], b"ping");
    assert_eq!(chunks[&(reused[1], "client")], b"again");
}

#[test]
fn mid_stream_pickup_takes_the_well_known_port_as_server() {
    let mut pcap = PcapFile::new();
    let c = (CLIENT, 45000);
    let s = (SERVER, 5432);
    // The server speaks first in this capture: no handshake seen.
    pcap.frame(0, &tcp(s, c, 7000, 300, "PA", b"Z\0\0\0\x05I"));
    pcap.frame(1, &tcp(c, s, 300, 7006, "PA", b"Q\0\0\0\x0dselect 1\0"));
    let path = pcap.save("midstream.pcap");
    let (record, _) = run(&path, Limits::default(), 1, Vec::new());
    let flows = record.flows.lock().unwrap().clone();
    let flow = flows.values().next().unwrap();
    assert_eq!(flow.client.to_string(), "10.0.0.1:45000");
    assert_eq!(flow.server.to_string(), "10.0.0.2:5432");
    let chunks = record.chunks.lock().unwrap();
    assert_eq!(chunks[&(flow.id.0, Side::Server.as_str())], b"Z\0\0\0\x05I");
}

#[test]
fn the_total_buffer_bound_drops_and_counts_then_reports_the_hole() {
    let mut pcap = PcapFile::new();
    let c = (CLIENT, 40000);
    let s = (SERVER, 7000);
    pcap.frame(0, &tcp(c, s, 0, 0, "S", b""));
    // Byte 1..1001 never arrives; 20 segments of 1000 bytes arrive after the hole.
    let chunk = vec![b'x'; 1000];
    for i in 0..20u32 {
        pcap.frame(
            1 + u64::from(i),
            &tcp(c, s, 1001 + i * 1000, 0, "A", &chunk),
        );
    }
    let path = pcap.save("hole.pcap");
    let limits = Limits {
        max_buffer: 4000,
        ..Limits::default()
    };
    let (record, outcome) = run(&path, limits, 1, Vec::new());
    let r = outcome.stats.reassembly;
    assert!(r.total_limit_dropped_bytes >= 16_000, "{r:?}");
    assert!(r.gaps >= 1);
    let gaps = record.kinds("gap");
    assert!(
        gaps.iter()
            .any(|(_, d)| d.as_deref() == Some("client:1000")),
        "{gaps:?}"
    );
    assert!(outcome
        .stats
        .to_string()
        .contains("bytes over --max-buffer"));
}
