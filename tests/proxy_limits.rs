//! The proxy's bounds: idle connections are closed (`--idle-timeout`) and connections past
//! `--max-connections` wait until one closes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{demo, echo_server, free_port, json_lines, local, proxy, temp_dir};

/// Reads until EOF; returns how long it took, or None when `within` passed first.
fn eof_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

#[test]
fn idle_relays_and_idle_keep_alive_connections_are_closed() {
    let (_demo, origin) = demo();
    let upstream = echo_server();
    let forward = local(free_port());
    let mapping = local(free_port());
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let spec = format!("{mapping}=tcp://{upstream}");
    let mut p = proxy(
        &[
            "--proxy-address",
            &forward.to_string(),
            "--proxy",
            &spec,
            "--idle-timeout",
            "1s",
            "--quiet",
            "--output",
            events.to_str().unwrap(),
        ],
        &[forward, mapping],
    );

    let mut relay = TcpStream::connect(mapping).unwrap();
    relay.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    relay.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    let took = eof_within(&mut relay, Duration::from_secs(20)).expect("the idle relay is closed");
    assert!(took >= Duration::from_millis(500), "{took:?}");

    let mut http = TcpStream::connect(forward).unwrap();
    write!(
        http,
        "GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n"
    )
    .unwrap();
    eof_within(&mut http, Duration::from_secs(20))
        .expect("the idle keep-alive connection is closed");

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let relay_end = events
        .iter()
        .find(|e| e["kind"] == "flow_end" && e["protocol"] == "tcp" && e["bytes_from_client"] == 4)
        .expect("the relay flow is reported");
    assert_eq!(relay_end["end"], "timeout", "{relay_end}");
    assert!(events
        .iter()
        .any(|e| e["kind"] == "http_response" && e["status"] == 200));
}

#[test]
fn connections_past_the_limit_wait_for_a_free_slot() {
    let upstream = echo_server();
    let mapping = local(free_port());
    let spec = format!("{mapping}=tcp://{upstream}");
    let mut p = proxy(
        &[
            "--disable-http-proxy",
            "--proxy",
            &spec,
            "--max-connections",
            "1",
            "--quiet",
        ],
        &[],
    );
    p.wait_output("mapping", Duration::from_secs(20));

    let mut first = TcpStream::connect(mapping).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    first.write_all(b"one").unwrap();
    let mut buf = [0u8; 3];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"one");

    // The second connection is queued, not served, while the first is open.
    let mut second = TcpStream::connect(mapping).unwrap();
    second.write_all(b"two").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let err = second.read(&mut buf).expect_err("not served yet");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two");
    drop(second);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}
