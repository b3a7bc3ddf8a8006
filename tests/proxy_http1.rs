//! HTTP/1 details of the forward proxy, seen from raw sockets on both sides: pipelining,
//! HTTP/1.0 clients, interim responses, early answers, conflicting framing, pooled upstream
//! connections the upstream dropped, and protocol switches (WebSocket and the like).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{demo, read_head, start_proxy};

/// The value of `name` in `head`.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(head: &str) -> u16 {
    head[9..12].parse().unwrap()
}

/// One response: status, head, body (by Content-Length, else to the end of the stream).
fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let head = read_head(s);
    let mut body = Vec::new();
    match field(&head, "content-length") {
        Some(n) => {
            body.resize(n.parse().unwrap(), 0);
            s.read_exact(&mut body).unwrap();
        }
        None => {
            s.read_to_end(&mut body).unwrap();
        }
    }
    (status(&head), head, body)
}

fn client(proxy: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// An origin on loopback serving each accepted connection with `serve` (on its own
/// thread); counts connections.
fn origin(serve: fn(TcpStream, usize)) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(conn) = conn else { return };
            let n = count.fetch_add(1, Ordering::SeqCst);
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            std::thread::spawn(move || serve(conn, n));
        }
    });
    (addr, accepted)
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_demo, origin) = demo();
    let (mut p, proxy) = start_proxy(&[]);
    let mut s = client(proxy);
    let two = format!(
        "GET http://{origin}/status/201 HTTP/1.1\r\nHost: {origin}\r\n\r\n\
         GET http://{origin}/bytes/5 HTTP/1.1\r\nHost: {origin}\r\n\r\n"
    );
    s.write_all(two.as_bytes()).unwrap();
    let (first, _, body) = read_response(&mut s);
    assert_eq!((first, &body[..]), (201, &b"201 Created\n"[..]));
    let (second, _, body) = read_response(&mut s);
    assert_eq!((second, &body[..]), (200, &b"01234"[..]));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn http_1_0_clients_get_chunked_bodies_decoded() {
    let (_demo, origin) = demo();
    let (mut p, proxy) = start_proxy(&[]);
    let mut s = client(proxy);
    s.write_all(format!("GET http://{origin}/chunked/5000 HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let (code, head, body) = read_response(&mut s);
    assert_eq!(code, 200, "{head}");
    assert_eq!(field(&head, "transfer-encoding"), None, "{head}");
    assert_eq!(field(&head, "connection"), Some("close"), "{head}");
    assert_eq!(body.len(), 5000);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn interim_responses_reach_the_client_while_it_waits_to_send_the_body() {
    let (origin, _) = origin(|mut s, _| {
        let head = read_head(&mut s);
        assert!(
            head.to_ascii_lowercase().contains("expect: 100-continue"),
            "{head}"
        );
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        let mut body = [0u8; 5];
        s.read_exact(&mut body).unwrap();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
            String::from_utf8_lossy(&body)
        );
        s.write_all(answer.as_bytes()).unwrap();
    });
    let (mut p, proxy) = start_proxy(&[]);
    let mut s = client(proxy);
    let head = format!(
        "POST http://{origin}/up HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    // The client sends nothing more until the 100 comes through.
    assert_eq!(status(&read_head(&mut s)), 100);
    s.write_all(b"hello").unwrap();
    let (code, _, body) = read_response(&mut s);
    assert_eq!((code, &body[..]), (200, &b"hello"[..]));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn an_early_answer_ends_an_upload() {
    let (origin, _) = origin(|mut s, _| {
        read_head(&mut s);
        s.write_all(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig",
        )
        .unwrap();
    });
    let (mut p, proxy) = start_proxy(&[]);
    let mut s = client(proxy);
    let head = format!(
        "PUT http://{origin}/up HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 100000000\r\n\r\nfirst bytes"
    );
    s.write_all(head.as_bytes()).unwrap();
    let (code, head, body) = read_response(&mut s);
    assert_eq!((code, &body[..]), (413, &b"big"[..]));
    assert_eq!(field(&head, "connection"), Some("close"), "{head}");
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn credentials_in_the_url_do_not_become_the_host() {
    let (_demo, origin) = demo();
    let (mut p, proxy) = start_proxy(&[]);
    let mut s = client(proxy);
    let req = format!("GET http://user:secret@{origin}/echo HTTP/1.1\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let (code, _, body) = read_response(&mut s);
    assert_eq!(code, 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let host = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("host"))
        .map(|h| h[1].as_str().unwrap().to_string());
    assert_eq!(host, Some(origin.to_string()), "{echo}");
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn a_head_dribbled_byte_by_byte_times_out_as_a_whole() {
    let (mut p, proxy) = start_proxy(&["--idle-timeout", "1s"]);
    let mut s = client(proxy);
    let started = std::time::Instant::now();
    s.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\n")
        .unwrap();
    // Every byte comes well within the idle timeout; the head as a whole does not.
    let mut answer = Vec::new();
    for byte in b"X-Slow: ".iter().cycle().take(40) {
        std::thread::sleep(Duration::from_millis(100));
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        s.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn an_answer_before_the_body_was_read_closes_the_connection() {
    let (mut p, proxy) = start_proxy(&[]);
    let dead = common::free_port();
    let mut s = client(proxy);
    let head = format!(
        "POST http://127.0.0.1:{dead}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b"
    );
    s.write_all(head.as_bytes()).unwrap();
    let (code, head, _) = read_response(&mut s);
    assert_eq!(code, 502, "{head}");
    // The other 90 bytes must not be taken for a request: the proxy closes instead.
    assert_eq!(field(&head, "connection"), Some("close"), "{head}");
    let _ = s.write_all(&[b'x'; 90]);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn conflicting_framing_is_refused() {
    let (_demo, origin) = demo();
    let (mut p, proxy) = start_proxy(&[]);
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Content-Length: 5\r\nContent-Length: 6",
        "Transfer-Encoding: gzip",
    ] {
        let mut s = client(proxy);
        let req =
            format!("POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\n{framing}\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let (code, _, body) = read_response(&mut s);
        assert_eq!(code, 400, "{framing}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn a_pooled_connection_the_upstream_dropped_is_replaced() {
    // Each connection answers one request, then closes when the next one arrives (as an
    // upstream whose keep-alive timeout ends just as a request goes out).
    let (origin, accepted) = origin(|mut s, n| {
        read_head(&mut s);
        let body = format!("conn {n}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(answer.as_bytes()).unwrap();
        let mut rest = [0u8; 1];
        let _ = s.read(&mut rest);
    });
    let (mut p, proxy) = start_proxy(&[]);
    let mut s = client(proxy);
    let get = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    for expected in ["conn 0", "conn 1"] {
        s.write_all(get.as_bytes()).unwrap();
        let (code, _, body) = read_response(&mut s);
        assert_eq!(
            (code, String::from_utf8_lossy(&body)),
            (200, expected.into())
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

#[test]
fn a_protocol_switch_becomes_a_byte_relay_on_the_same_flow() {
    // Switches when asked (and says what it was asked), then answers every byte in upper case.
    let (origin, _) = origin(|mut s, _| {
        let head = read_head(&mut s).to_ascii_lowercase();
        if !(head.contains("upgrade: tapline-echo") && head.contains("connection: upgrade")) {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tapline-echo\r\nConnection: Upgrade\r\n\r\nready")
            .unwrap();
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n].to_ascii_uppercase()).unwrap();
        }
    });
    let dir = common::temp_dir();
    let events = dir.path().join("events.jsonl");
    let (mut p, proxy) = start_proxy(&["--output", events.to_str().unwrap()]);
    let mut s = client(proxy);
    let head = format!(
        "GET http://{origin}/chat HTTP/1.1\r\nHost: {origin}\r\nConnection: Upgrade\r\n\
         Upgrade: tapline-echo\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let head = read_head(&mut s);
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(field(&head, "upgrade"), Some("tapline-echo"), "{head}");
    let mut ready = [0u8; 5];
    s.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready");
    for word in ["hello", "through the proxy"] {
        s.write_all(word.as_bytes()).unwrap();
        let mut echoed = vec![0u8; word.len()];
        s.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, word.to_ascii_uppercase().as_bytes());
    }
    drop(s);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = common::json_lines(&events);
    let response = events
        .iter()
        .find(|e| e["kind"] == "http_response")
        .expect("the switch is reported");
    assert_eq!(response["status"], 101);
    let end = events
        .iter()
        .find(|e| e["kind"] == "flow_end")
        .expect("the flow ends");
    assert!(end["flow"].is_string(), "{end}");
    assert_eq!(end["flow"], response["flow"], "one flow: {events:?}");
    // 101 head + "ready" + both echoes reached the client on that flow.
    assert!(
        end["bytes_from_server"].as_u64().unwrap() > 60 + 22,
        "{end}"
    );
}

#[test]
fn a_download_cut_by_a_forced_stop_is_still_reported() {
    // Streams a chunk every 100 ms for far longer than the stop's grace period.
    let (origin, _) = origin(|mut s, _| {
        read_head(&mut s);
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..300 {
            out.extend_from_slice(b"a\r\n0123456789\r\n");
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let dir = common::temp_dir();
    let events = dir.path().join("events.jsonl");
    let (mut p, proxy) = start_proxy(&["--output", events.to_str().unwrap()]);
    let mut s = client(proxy);
    s.write_all(
        format!("GET http://{origin}/stream HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got.len()
    });
    std::thread::sleep(Duration::from_secs(1));
    // The stop waits out its grace period (5 s) for the download, then forces the end.
    assert_eq!(p.stop(Duration::from_secs(20)), Some(0), "{}", p.stderr());
    let received = reader.join().unwrap();
    let events = common::json_lines(&events);
    let response = events
        .iter()
        .find(|e| e["kind"] == "http_response")
        .unwrap_or_else(|| panic!("the cut download is reported: {events:?}"));
    assert_eq!(response["status"], 200);
    let body_len = response["body_len"].as_u64().unwrap();
    assert!(
        body_len > 200 && (body_len as usize) < received,
        "{body_len} of {received}"
    );
    let end = events.iter().find(|e| e["kind"] == "flow_end").unwrap();
    assert_eq!(end["end"], "shutdown", "{end}");
}
