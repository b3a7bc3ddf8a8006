//! What tshark and tapline each say about a capture: the SQL statements (Query and Parse
//! texts), the HTTP requests (method, URI) and the HTTP response status codes. Shared by the
//! `decode_*` tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use tapline_core::{EventKind, Side, Timestamp};
use tapline_decode::{DecodeConfig, FlowDecoder};

use crate::common::tshark_stdout;

/// The facts compared.
#[derive(Debug, Default, PartialEq, Eq, PartialOrd, Ord, Clone)]
pub struct Facts {
    pub sql: Vec<String>,
    pub requests: Vec<(String, String)>,
    pub statuses: Vec<u16>,
}

impl Facts {
    /// Every stream's facts together, each list sorted (streams interleave differently in
    /// tshark's frame order and in tapline's per-flow output).
    pub fn merged<'a>(all: impl IntoIterator<Item = &'a Facts>) -> Facts {
        let mut m = Facts::default();
        for f in all {
            m.sql.extend(f.sql.iter().cloned());
            m.requests.extend(f.requests.iter().cloned());
            m.statuses.extend(&f.statuses);
        }
        m.sql.sort();
        m.requests.sort();
        m.statuses.sort_unstable();
        m
    }

    /// The facts in tapline's JSON lines (`--json` or `--output`), per flow id.
    pub fn from_json_lines(lines: &[Value]) -> BTreeMap<String, Facts> {
        let mut flows: BTreeMap<String, Facts> = BTreeMap::new();
        for l in lines {
            let flow = l["flow"].as_str().unwrap_or_default().to_string();
            match l["kind"].as_str() {
                Some("message") if matches!(l["type"].as_str(), Some("Query" | "Parse")) => {
                    let sql = l["fields"]["sql"].as_str().expect("sql").to_string();
                    flows.entry(flow).or_default().sql.push(sql);
                }
                Some("http_request") => {
                    let method = l["method"].as_str().expect("method").to_string();
                    let path = l["path"].as_str().expect("path").to_string();
                    flows.entry(flow).or_default().requests.push((method, path));
                }
                Some("http_response") => {
                    let status = l["status"].as_u64().expect("status") as u16;
                    flows.entry(flow).or_default().statuses.push(status);
                }
                _ => {}
            }
        }
        flows
    }

    /// The facts in decoded events.
    pub fn from_events(events: &[EventKind]) -> Facts {
        let mut facts = Facts::default();
        for e in events {
            match e {
                EventKind::Message(m) if m.type_name == "Query" || m.type_name == "Parse" => {
                    facts
                        .sql
                        .push(m.fields["sql"].as_str().expect("sql").to_string());
                }
                EventKind::HttpRequest(r) => {
                    facts.requests.push((r.method.clone(), r.path.clone()))
                }
                EventKind::HttpResponse(r) => facts.statuses.push(r.status),
                _ => {}
            }
        }
        facts
    }
}

/// `-d` rules decoding every TCP port in `file` as `dissector`. tshark picks dissectors by
/// port, lower port first, so a rule for the server's port alone loses to an ephemeral client
/// port that another protocol registered (48898 is ADS/AMS).
pub fn every_port_as(file: &Path, dissector: &str) -> Vec<String> {
    let ports: BTreeSet<String> = tshark_stdout(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "tcp.srcport",
    ])
    .lines()
    .filter(|p| !p.is_empty())
    .map(String::from)
    .collect();
    ports
        .iter()
        .map(|p| format!("tcp.port=={p},{dissector}"))
        .collect()
}

/// tshark's facts for every TCP stream of `file`, by stream number (one tshark run).
/// `decode_as` adds tshark `-d` rules (e.g. `tcp.port==5433,pgsql`).
pub fn tshark_facts(file: &Path, decode_as: &[&str]) -> BTreeMap<u64, Facts> {
    let mut args = vec!["-r", file.to_str().unwrap()];
    for rule in decode_as {
        args.extend(["-d", rule]);
    }
    args.extend([
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
    let json = tshark_stdout(&args);
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
pub struct Stream {
    pub pieces: Vec<(Side, Vec<u8>)>,
    pub client_port: u16,
    pub server_port: u16,
}

impl Stream {
    /// Feeds the stream to a [`FlowDecoder`] chosen by its ports; the facts it decodes.
    pub fn decode(&self) -> Facts {
        let config = DecodeConfig::default();
        let mut decoder = FlowDecoder::for_ports(self.client_port, self.server_port, &config);
        let mut events = Vec::new();
        for (i, (side, bytes)) in self.pieces.iter().enumerate() {
            decoder.feed(*side, Timestamp(i as i64), bytes, &mut events);
        }
        decoder.finish(Timestamp(self.pieces.len() as i64), &mut events);
        Facts::from_events(&events)
    }
}

/// Every TCP stream of `file`, reassembled by tshark (`-z follow,tcp,raw,N`, one run).
pub fn follow_all(file: &Path) -> BTreeMap<u64, Stream> {
    let numbers = tshark_stdout(&[
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
    let mut seen = BTreeSet::new();
    for n in numbers.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        if seen.insert(n) {
            args.extend(["-z".into(), format!("follow,tcp,raw,{n}")]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = tshark_stdout(&args);
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

/// The shared captures (pcap and pcapng), sorted.
pub fn capture_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".pcap") || name.ends_with(".pcapng")
        })
        .collect();
    files.sort();
    files
}
