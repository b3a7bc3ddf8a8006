//! The proxy pcap export read back by tshark: streams followed byte for byte (IPv4, IPv6 and
//! mixed families), checksums valid, HTTP rebuilt from forward-proxy events and PostgreSQL
//! decoded.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tapline_core::{
    Chunk, Event, EventKind, EventSink, Flow, FlowEnd, FlowId, FlowStats, Headers, HttpRequest,
    HttpResponse, Mode, Protocol, Route, Side, Timestamp,
};
use tapline_output::PcapExport;

fn have_tshark() -> bool {
    let ok = Command::new("tshark").arg("-v").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "tshark is missing in CI");
        eprintln!("SKIP: tshark is not installed (apt-get install tshark)");
    }
    ok
}

fn flow(id: u64, protocol: Protocol, route: Route, client: &str, server: &str) -> Arc<Flow> {
    Arc::new(Flow {
        id: FlowId(id),
        uid: tapline_core::FlowUid::random(),
        mode: Mode::Proxy,
        protocol,
        route,
        client: client.parse().unwrap(),
        server: server.parse().unwrap(),
        started: Timestamp::from_secs_micros(1_700_000_000, 0),
        tls: None,
    })
}

/// Emits start, the chunks in order, and end, with increasing timestamps.
fn raw_flow(sink: &PcapExport, flow: &Arc<Flow>, chunks: &[(Side, Vec<u8>)]) {
    let mut ts = flow.started;
    let mut next = || {
        ts = Timestamp(ts.0 + 1_000);
        ts
    };
    sink.emit(&Event::on_flow(flow, next(), EventKind::FlowStart));
    for (from, data) in chunks {
        let chunk = Chunk {
            from: *from,
            data: Bytes::from(data.clone()),
        };
        sink.emit(&Event::on_flow(flow, next(), EventKind::Chunk(chunk)));
    }
    sink.emit(&Event::on_flow(flow, next(), end()));
}

fn end() -> EventKind {
    EventKind::FlowEnd {
        stats: FlowStats::default(),
        end: FlowEnd::Fin,
        duration: Duration::from_millis(3),
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The two directions of TCP stream `n` as tshark follows them (node 0 = the client).
fn follow(pcap: &Path, n: usize) -> (Vec<u8>, Vec<u8>) {
    let text = tshark(&[
        "-r",
        pcap.to_str().unwrap(),
        "-q",
        "-z",
        &format!("follow,tcp,raw,{n}"),
    ]);
    let (mut client, mut server) = (Vec::new(), Vec::new());
    let body = text.split("Node 1:").nth(1).expect("follow output");
    for line in body.lines().skip(1) {
        if line.starts_with("====") {
            break;
        }
        let (to, hex) = match line.strip_prefix('\t') {
            Some(h) => (&mut server, h),
            None => (&mut client, line),
        };
        let hex = hex.trim();
        for i in (0..hex.len()).step_by(2) {
            to.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
        }
    }
    (client, server)
}

#[test]
fn tshark_follows_decodes_and_validates_the_export() {
    if !have_tshark() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("proxy.pcap");
    let sink = PcapExport::create(&pcap).unwrap();

    // Stream 0: raw TCP over IPv4, payloads larger than one segment.
    let tcp = flow(
        1,
        Protocol::Tcp,
        Route::Mapping,
        "127.0.0.1:40001",
        "127.0.0.1:9000",
    );
    let (c1, s1, c2) = (noise(5000, 1), noise(3000, 2), noise(10, 3));
    raw_flow(
        &sink,
        &tcp,
        &[
            (Side::Client, c1.clone()),
            (Side::Server, s1.clone()),
            (Side::Client, c2.clone()),
        ],
    );

    // Stream 1: PostgreSQL on a port tshark does not know.
    let pg = flow(
        2,
        Protocol::Postgres,
        Route::Mapping,
        "127.0.0.1:40002",
        "127.0.0.1:6543",
    );
    let mut query = b"Q\0\0\0\x0dselect 1\0".to_vec();
    query[4] = (4 + "select 1\0".len()) as u8;
    raw_flow(&sink, &pg, &[(Side::Client, query.clone())]);

    // Stream 2: a forward-proxy HTTP exchange, rebuilt from its events.
    let http = flow(
        3,
        Protocol::Http,
        Route::Forward,
        "127.0.0.1:40003",
        "127.0.0.1:7070",
    );
    let t = |us| Timestamp(http.started.0 + us);
    sink.emit(&Event::on_flow(&http, t(1), EventKind::FlowStart));
    let request = HttpRequest {
        method: "POST".into(),
        path: "/echo?x=1".into(),
        url: Some("http://127.0.0.1:7070/echo?x=1".into()),
        version: "HTTP/1.1".into(),
        headers: Headers(vec![
            ("Host".into(), "127.0.0.1:7070".into()),
            ("Transfer-Encoding".into(), "chunked".into()),
        ]),
        body: Bytes::from_static(b"ping"),
        body_len: 4,
        body_truncated: false,
    };
    sink.emit(&Event::on_flow(
        &http,
        t(2),
        EventKind::HttpRequest(request.clone()),
    ));
    let mut response = HttpResponse::new(
        201,
        Headers(vec![("Content-Type".into(), "text/plain".into())]),
        Bytes::from(noise(4000, 4)),
    );
    response.request = Some(request.line());
    sink.emit(&Event::on_flow(
        &http,
        t(3),
        EventKind::HttpResponse(response),
    ));
    sink.emit(&Event::on_flow(&http, t(4), end()));

    // Stream 3: IPv6; stream 4: client IPv4, upstream IPv6.
    let v6 = flow(4, Protocol::Tcp, Route::Tunnel, "[::1]:40004", "[::1]:443");
    let (c6, s6) = (noise(3000, 5), noise(1441, 6));
    raw_flow(
        &sink,
        &v6,
        &[(Side::Client, c6.clone()), (Side::Server, s6.clone())],
    );
    let mixed = flow(
        5,
        Protocol::Tcp,
        Route::Tunnel,
        "127.0.0.1:40005",
        "[::1]:443",
    );
    raw_flow(&sink, &mixed, &[(Side::Server, b"hello".to_vec())]);
    sink.flush();

    let p = pcap.to_str().unwrap();
    assert_eq!(follow(&pcap, 0), ([c1, c2].concat(), s1));
    assert_eq!(follow(&pcap, 1).0, query);
    assert_eq!(follow(&pcap, 3), (c6, s6));
    assert_eq!(follow(&pcap, 4), (Vec::new(), b"hello".to_vec()));

    let queries = tshark(&[
        "-r",
        p,
        "-d",
        "tcp.port==6543,pgsql",
        "-Y",
        "pgsql.query",
        "-T",
        "fields",
        "-e",
        "pgsql.query",
    ]);
    assert_eq!(queries.trim(), "select 1");

    let requests = tshark(&[
        "-r",
        p,
        "-Y",
        "http.request",
        "-T",
        "fields",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.content_length",
    ]);
    assert_eq!(requests.trim(), "POST\t/echo?x=1\t4");
    let responses = tshark(&[
        "-r",
        p,
        "-Y",
        "http.response",
        "-T",
        "fields",
        "-e",
        "http.response.code",
        "-e",
        "http.content_length",
        "-e",
        "http.request_in",
    ]);
    let fields: Vec<&str> = responses.trim().split('\t').collect();
    assert_eq!(fields[..2], ["201", "4000"], "{responses}");
    assert!(
        !fields[2].is_empty(),
        "tshark pairs the response with its request"
    );

    let bad = tshark(&[
        "-r",
        p,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        "tcp.checksum.status != 1 || ip.checksum.status == 0 || tcp.analysis.flags",
    ]);
    assert_eq!(bad, "", "no bad checksums and no TCP analysis warnings");
}
