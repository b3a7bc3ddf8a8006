//! Mapping proxies end to end: a real psql session through a `psql` mapping, many large
//! streams through a `tcp` mapping, and an `http` mapping in front of the demo origin.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    curl_ok, demo, free_port, have, json_lines, local, proxy, start_mapping, temp_dir, Postgres,
};

#[test]
fn psql_works_through_a_psql_mapping() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let listen = local(free_port());
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let spec = format!("{}=psql://{}", listen.port(), pg.addr);
    let mut p = proxy(
        &[
            "--disable-http-proxy",
            "--proxy-proto",
            &spec,
            "--quiet",
            "--output",
            events.to_str().unwrap(),
        ],
        &[listen],
    );
    p.wait_output(
        &format!("mapping {listen} -> psql://{}", pg.addr),
        Duration::from_secs(5),
    );

    let (code, out, err) = Postgres::psql(listen, "SELECT 40 + 2 AS answer");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("42"), "{out}");
    let (_, out, err) = Postgres::psql(
        listen,
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 500); SELECT count(*) FROM t; SELECT * FROM no_such_table;",
    );
    assert!(out.contains("500"), "{out}\n{err}");
    assert!(err.contains("no_such_table"), "{err}");

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    // Two psql sessions, plus the readiness probe's empty flow.
    let ends: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "flow_end" && e["bytes_from_client"] != 0)
        .collect();
    assert_eq!(ends.len(), 2, "{events:?}");
    for end in &ends {
        assert_eq!(end["protocol"], "postgres");
        assert_eq!(end["route"], "mapping");
        assert_eq!(end["server"], pg.addr.to_string());
        assert_eq!(end["end"], "fin", "{end}");
    }
    let queries: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "message" && e["type"] == "Query")
        .filter_map(|e| e["fields"]["sql"].as_str())
        .collect();
    assert!(
        queries.contains(&"SELECT 40 + 2 AS answer"),
        "{queries:?} in {events:?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "message"
            && e["from"] == "server"
            && e["type"] == "ErrorResponse"),
        "the failed statement's error is decoded"
    );
}

const STREAMS: usize = 50;
const STREAM_LEN: usize = 20 << 20;

/// The bytes of stream `i`: a shared random buffer rotated by a per-stream offset, so every
/// stream differs and a byte out of place is caught.
struct Streams {
    base: Vec<u8>,
}

impl Streams {
    fn new() -> Self {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let base = (0..STREAM_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Streams { base }
    }

    fn offset(i: usize) -> usize {
        (i * 7919 + 1) % STREAM_LEN
    }

    /// Stream `i` as two slices.
    fn parts(&self, i: usize) -> (&[u8], &[u8]) {
        let off = Self::offset(i);
        (&self.base[off..], &self.base[..off])
    }

    /// Whether `got` is what stream `i` holds from byte `at` on.
    fn matches(&self, i: usize, at: usize, got: &[u8]) -> bool {
        let start = (Self::offset(i) + at) % STREAM_LEN;
        let first = (STREAM_LEN - start).min(got.len());
        self.base[start..start + first] == got[..first]
            && self.base[..got.len() - first] == got[first..]
    }

    /// Reads stream `i` from `r` and says where it first differs, if it does.
    fn check(&self, i: usize, r: &mut impl Read) -> Result<(), String> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut at = 0usize;
        loop {
            let n = r.read(&mut buf).map_err(|e| format!("stream {i}: {e}"))?;
            if n == 0 {
                break;
            }
            if at + n > STREAM_LEN || !self.matches(i, at, &buf[..n]) {
                return Err(format!("stream {i}: differs within bytes {at}..{}", at + n));
            }
            at += n;
        }
        if at != STREAM_LEN {
            return Err(format!("stream {i}: {at} bytes arrived, {STREAM_LEN} sent"));
        }
        Ok(())
    }
}

/// Serves each connection: `U<i>` uploads stream i (answered `OK` or what differed),
/// `D<i>` downloads stream i. (The proxy's readiness probe is a connection too.)
fn stream_server(listener: TcpListener, streams: Arc<Streams>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        let streams = streams.clone();
        std::thread::spawn(move || {
            let mut cmd = [0u8; 3];
            if s.read_exact(&mut cmd).is_err() {
                return;
            }
            let i = usize::from(cmd[1]) * 256 + usize::from(cmd[2]);
            if cmd[0] == b'U' {
                let verdict = match streams.check(i, &mut s) {
                    Ok(()) => "OK".to_string(),
                    Err(e) => e,
                };
                let _ = s.write_all(verdict.as_bytes());
            } else {
                let (a, b) = streams.parts(i);
                let _ = s.write_all(a).and_then(|_| s.write_all(b));
            }
        });
    }
}

fn stream_client(via: SocketAddr, streams: &Streams, i: usize) -> Result<(), String> {
    let failed = |what: &str, e: std::io::Error| format!("stream {i}: {what}: {e}");
    let mut s = TcpStream::connect(via).map_err(|e| failed("connect", e))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let upload = i.is_multiple_of(2);
    let cmd = [
        if upload { b'U' } else { b'D' },
        (i / 256) as u8,
        (i % 256) as u8,
    ];
    s.write_all(&cmd).map_err(|e| failed("command", e))?;
    if upload {
        let (a, b) = streams.parts(i);
        s.write_all(a)
            .and_then(|_| s.write_all(b))
            .map_err(|e| failed("upload", e))?;
        s.shutdown(Shutdown::Write)
            .map_err(|e| failed("shutdown", e))?;
        let mut verdict = String::new();
        s.read_to_string(&mut verdict)
            .map_err(|e| failed("verdict", e))?;
        if verdict != "OK" {
            return Err(format!("upload {i}: {verdict}"));
        }
        Ok(())
    } else {
        streams.check(i, &mut s)
    }
}

#[test]
fn fifty_large_streams_cross_a_tcp_mapping_byte_identical() {
    let streams = Arc::new(Streams::new());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let server_streams = streams.clone();
    std::thread::spawn(move || stream_server(listener, server_streams));
    let listen = local(free_port());
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let spec = format!("{listen}=tcp://{upstream}");
    let mut p = proxy(
        &[
            "--disable-http-proxy",
            "--proxy",
            &spec,
            "--quiet",
            "--output",
            events.to_str().unwrap(),
        ],
        &[listen],
    );

    let started = Instant::now();
    let clients: Vec<_> = (0..STREAMS)
        .map(|i| {
            let streams = streams.clone();
            std::thread::spawn(move || stream_client(listen, &streams, i))
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .filter_map(|c| c.join().unwrap().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}\n{}", p.stderr());
    assert!(started.elapsed() < Duration::from_secs(120));

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let ends: Vec<_> = events.iter().filter(|e| e["kind"] == "flow_end").collect();
    // The readiness probe is one more (empty) flow.
    assert!(ends.len() > STREAMS, "{}", ends.len());
    let moved: u64 = ends
        .iter()
        .map(|e| {
            e["bytes_from_client"].as_u64().unwrap() + e["bytes_from_server"].as_u64().unwrap()
        })
        .sum();
    assert!(moved >= (STREAMS * STREAM_LEN) as u64, "{moved}");
    assert!(ends
        .iter()
        .all(|e| e["protocol"] == "tcp" && e["end"] == "fin"));
}

#[test]
fn an_http_mapping_reverse_proxies_to_its_upstream() {
    if !have("curl") {
        return;
    }
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let (mut p, listen) = start_mapping(
        "http",
        origin,
        &["--quiet", "--output", events.to_str().unwrap()],
    );
    let out = curl_ok(&[&format!("http://{listen}/echo?x=1")]);
    let echo: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(echo["path"], "/echo?x=1");
    let host = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("host"))
        .map(|h| h[1].clone());
    assert_eq!(host, Some(serde_json::json!(origin.to_string())));

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let req = events
        .iter()
        .find(|e| e["kind"] == "http_request")
        .expect("the request is reported");
    assert_eq!(req["route"], "mapping");
    assert_eq!(req["url"], format!("http://{origin}/echo?x=1"));
    let resp = events
        .iter()
        .find(|e| e["kind"] == "http_response")
        .unwrap();
    assert_eq!(resp["status"], 200);
}
