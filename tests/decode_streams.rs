//! tapline's HTTP and PostgreSQL decoders on the real TCP streams of the shared captures agree
//! with tshark: the same SQL statements (Query and Parse), the same HTTP requests (method,
//! URI) and response status codes, stream by stream.
//!
//! tshark reassembles each stream (`-z follow,tcp,raw,N`) and the bytes are fed to
//! [`FlowDecoder`] in the order tshark shows them, so this checks the decoders alone;
//! `decode_pcaps.rs` checks the same facts through `tapline capture`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tapline_core::{EventKind, Side, Timestamp};
use tapline_decode::{DecodeConfig, FlowDecoder};

/// What one side of the comparison says about a stream.
#[derive(Debug, Default, PartialEq)]
struct Facts {
    sql: Vec<String>,
    requests: Vec<(String, String)>,
    statuses: Vec<u16>,
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("run tshark");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tshark's facts for every stream of `file`, by stream number (one tshark run).
fn tshark_facts(file: &Path) -> BTreeMap<u64, Facts> {
    let json = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-Y",
        "pgsql.query || http.request || http.response",
        "-T",
        "json",
        "-e",
        "tcp.stream",
        "-e",
        "pgsql.query",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.response.code",
    ]);
    let packets: Vec<Value> = serde_json::from_str(&json).unwrap_or_default();
    let mut facts: BTreeMap<u64, Facts> = BTreeMap::new();
    for p in &packets {
        let layers = &p["_source"]["layers"];
        let strings = |field: &str| -> Vec<String> {
            layers[field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let stream = strings("tcp.stream")[0].parse().unwrap();
        let f = facts.entry(stream).or_default();
        f.sql.extend(strings("pgsql.query"));
        f.requests.extend(
            strings("http.request.method")
                .into_iter()
                .zip(strings("http.request.uri")),
        );
        f.statuses.extend(
            strings("http.response.code")
                .iter()
                .map(|c| c.parse::<u16>().unwrap()),
        );
    }
    facts
}

/// A stream's two reassembled directions in tshark's order, and its client and server ports.
struct Stream {
    pieces: Vec<(Side, Vec<u8>)>,
    client_port: u16,
    server_port: u16,
}

/// Every TCP stream of `file`, reassembled by tshark (one tshark run).
fn follow_all(file: &Path) -> BTreeMap<u64, Stream> {
    let numbers = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "tcp.stream",
    ]);
    let mut args = vec![
        "-r".to_string(),
        file.to_str().unwrap().to_string(),
        "-q".into(),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for n in numbers.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        if seen.insert(n) {
            args.extend(["-z".into(), format!("follow,tcp,raw,{n}")]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = tshark(&args);
    let port = |addr: &str| -> u16 { addr.rsplit(':').next().unwrap().trim().parse().unwrap() };
    let mut streams = BTreeMap::new();
    let mut current: Option<(u64, Stream)> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("Filter: tcp.stream eq ") {
            let stream = Stream {
                pieces: Vec::new(),
                client_port: 0,
                server_port: 0,
            };
            if let Some((n, s)) = current.replace((n.trim().parse().unwrap(), stream)) {
                streams.insert(n, s);
            }
            continue;
        }
        let Some((_, s)) = current.as_mut() else {
            continue;
        };
        if let Some(addr) = line.strip_prefix("Node 0: ") {
            s.client_port = port(addr);
        } else if let Some(addr) = line.strip_prefix("Node 1: ") {
            s.server_port = port(addr);
        } else if line.starts_with('=') || line.contains(':') || line.trim().is_empty() {
            continue;
        } else if let Some(hex) = line.strip_prefix('\t') {
            s.pieces
                .push((Side::Server, hex::decode(hex.trim()).unwrap()));
        } else {
            s.pieces
                .push((Side::Client, hex::decode(line.trim()).unwrap()));
        }
    }
    streams.extend(current);
    streams
}

fn tapline_facts(stream: &Stream) -> Facts {
    let config = DecodeConfig::default();
    let mut decoder = FlowDecoder::for_ports(stream.client_port, stream.server_port, &config);
    let mut events = Vec::new();
    let pieces = &stream.pieces;
    for (i, (side, bytes)) in pieces.iter().enumerate() {
        decoder.feed(*side, Timestamp(i as i64), bytes, &mut events);
    }
    decoder.finish(Timestamp(pieces.len() as i64), &mut events);
    let mut facts = Facts::default();
    for e in events {
        match e {
            EventKind::Message(m) if m.type_name == "Query" || m.type_name == "Parse" => {
                facts
                    .sql
                    .push(m.fields["sql"].as_str().unwrap().to_string());
            }
            EventKind::HttpRequest(r) => facts.requests.push((r.method, r.path)),
            EventKind::HttpResponse(r) => facts.statuses.push(r.status),
            _ => {}
        }
    }
    facts
}

#[test]
fn decoders_agree_with_tshark_on_every_shared_stream() {
    let Some(dir) = common::shared_pcaps() else {
        return;
    };
    if !common::have("tshark") {
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".pcap") || name.ends_with(".pcapng")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected the shared captures in {dir:?}");
    let (mut statements, mut requests) = (0, 0);
    for file in &files {
        let mut facts = tshark_facts(file);
        for (n, stream) in follow_all(file) {
            let want = facts.remove(&n).unwrap_or_default();
            let got = tapline_facts(&stream);
            assert_eq!(
                got,
                want,
                "{} stream {n}: tapline (left) and tshark (right) disagree",
                file.display()
            );
            statements += want.sql.len();
            requests += want.requests.len();
        }
        assert!(
            facts.is_empty(),
            "{}: streams not followed: {facts:?}",
            file.display()
        );
    }
    // The captures hold 22 + 4 + 1 + 1 + 84 statements and 6 + 5 + 17 + 2 + 3 + 1 requests.
    assert_eq!((statements, requests), (112, 34));
}
