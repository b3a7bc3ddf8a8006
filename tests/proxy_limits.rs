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

/// A low open-files limit: the connection limit is lowered to what the descriptors carry
/// (said once at start), so clients past it wait instead of being accepted and dropped; the
/// relayed ones go on, nothing crashes, and the waiting ones are served once others close.
#[test]
fn a_low_open_files_limit_queues_clients_instead_of_failing_them() {
    if !common::have("prlimit") {
        eprintln!("SKIP: prlimit (util-linux) is not installed");
        return;
    }
    let upstream = echo_server();
    let mapping = local(free_port());
    let spec = format!("{mapping}=tcp://{upstream}");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=48:48")
        .arg("--")
        .arg(common::tapline().get_program())
        .args(["proxy", "--disable-http-proxy", "--proxy", &spec, "--quiet"]);
    let mut p = common::Proc::spawn("tapline proxy (48 descriptors)", cmd);
    p.wait_output("mapping", Duration::from_secs(20));
    assert!(
        p.stderr().contains("--max-connections 10000 lowered to 6"),
        "{}",
        p.stderr()
    );

    let echo = |s: &mut TcpStream, word: &[u8], within: Duration| -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = vec![0u8; word.len()];
        s.write_all(word).is_ok() && s.read_exact(&mut buf).is_ok() && buf == word
    };
    let mut served: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(mapping).unwrap())
        .collect();
    for s in &mut served {
        assert!(echo(s, b"ping", Duration::from_secs(10)));
    }
    // Past the limit: queued, not dropped.
    let mut waiting: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(mapping).unwrap())
        .collect();
    assert!(!echo(&mut waiting[0], b"wait", Duration::from_millis(800)));
    assert!(echo(&mut served[0], b"still here", Duration::from_secs(10)));

    drop(served);
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let mut buf = [0u8; 4];
    waiting[0].read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"wait", "its early bytes went through once accepted");
    for s in waiting.iter_mut().skip(1).take(5) {
        assert!(echo(s, b"late", Duration::from_secs(10)));
    }
    drop(waiting);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}
