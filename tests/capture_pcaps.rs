//! `tapline capture -r` on every shared capture: the flows in its JSON output (5-tuple and
//! reassembled bytes each way, from `flow_end`) match tshark's conversations
//! (`tshark -q -z conv,tcp`, run here) and `follow,tcp,raw` sizes (the `.expected.txt`
//! beside each capture). The byte-for-byte SHA-256 comparison, also on a reordered and
//! duplicated rewrite of every capture, is in crates/tapline-capture/tests/pcaps.rs.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::{json_lines, run_tapline, shared_pcaps, temp_dir, tshark_stdout};

/// A flow as tapline's `flow_end` reported it: {endpoint, endpoint} → bytes sent by each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FlowBytes {
    ends: (String, String),
    sent: (u64, u64),
}

impl FlowBytes {
    /// Endpoints in a fixed order, with the bytes each one sent.
    fn new(a: &str, a_sent: u64, b: &str, b_sent: u64) -> Self {
        if a <= b {
            FlowBytes {
                ends: (a.into(), b.into()),
                sent: (a_sent, b_sent),
            }
        } else {
            FlowBytes {
                ends: (b.into(), a.into()),
                sent: (b_sent, a_sent),
            }
        }
    }
}

fn tapline_flows(pcap: &Path) -> (Vec<FlowBytes>, String) {
    let dir = temp_dir();
    let out = dir.path().join("events.jsonl");
    let (code, _, stderr) = run_tapline(&[
        "capture",
        "-r",
        pcap.to_str().unwrap(),
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{}: {stderr}", pcap.display());
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut flows: Vec<FlowBytes> = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "flow_end" && e["protocol"] != "udp")
        .map(|e| {
            FlowBytes::new(
                e["client"].as_str().unwrap(),
                e["bytes_from_client"].as_u64().unwrap(),
                e["server"].as_str().unwrap(),
                e["bytes_from_server"].as_u64().unwrap(),
            )
        })
        .collect();
    flows.sort();
    (flows, stderr)
}

/// The `stream N:` lines of the `.expected.txt`: endpoints and `follow,tcp,raw` byte counts.
fn expected_flows(pcap: &Path) -> Vec<FlowBytes> {
    let text = fs::read_to_string(format!("{}.expected.txt", pcap.display())).unwrap();
    let mut flows: Vec<FlowBytes> = text
        .lines()
        .filter(|l| l.starts_with("stream "))
        .map(|line| {
            let (_, rest) = line.split_once(": ").unwrap();
            let (left, right) = rest.split_once(" | ").unwrap();
            let half = |s: &str| {
                let (ends, facts) = s.split_once(": ").unwrap();
                let (from, to) = ends.split_once(" -> ").unwrap();
                let n: u64 = facts.split_whitespace().next().unwrap().parse().unwrap();
                (from.to_string(), to.to_string(), n)
            };
            let (a, b, a_sent) = half(left);
            let (_, _, b_sent) = half(right);
            FlowBytes::new(&a, a_sent, &b, b_sent)
        })
        .collect();
    flows.sort();
    flows
}

/// The conversations `tshark -q -z conv,tcp` lists, as endpoint pairs.
fn tshark_conversations(pcap: &Path) -> BTreeSet<(String, String)> {
    tshark_stdout(&["-q", "-z", "conv,tcp", "-r", pcap.to_str().unwrap()])
        .lines()
        .filter(|l| l.contains("<->"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = (words[0].to_string(), words[2].to_string());
            if a <= b {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect()
}

#[test]
fn flows_match_tshark_on_every_shared_capture() {
    let Some(dir) = shared_pcaps() else { return };
    let tshark = common::have("tshark");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
            continue;
        }
        let (flows, stderr) = tapline_flows(&path);
        assert_eq!(
            flows,
            expected_flows(&path),
            "{name}: flows and bytes each way"
        );
        assert!(
            stderr.contains("tapline: capture: "),
            "{name}: stats line: {stderr}"
        );
        if name.starts_with("broken-") {
            assert!(
                stderr.contains("damaged record"),
                "{name}: one warning line for the bad record: {stderr}"
            );
        } else if tshark {
            let ours: BTreeSet<(String, String)> = flows.iter().map(|f| f.ends.clone()).collect();
            assert_eq!(ours, tshark_conversations(&path), "{name}: conversations");
        }
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} captures checked");
}
