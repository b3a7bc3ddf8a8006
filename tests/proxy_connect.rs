//! CONNECT tunnels on the forward proxy: curl over TLS to a real `openssl s_server`, and a
//! raw tunnel to a server that speaks first.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{
    connect_tunnel, curl, curl_env, free_port, have, json_lines, start_proxy, temp_dir, tls_server,
};

#[test]
fn curl_reaches_a_tls_server_through_a_connect_tunnel() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let (_server, tls) = tls_server(dir.path());
    let events = dir.path().join("events.jsonl");
    let (mut p, listen) = start_proxy(&["--output", events.to_str().unwrap()]);
    let via = format!("http://{listen}");
    let url = format!("https://{tls}/");

    let (code, body, err) = curl(&["-k", "-x", &via, &url]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("s_server"), "{body}");

    let (code, body, err) = curl_env(&["-k", &url], &[("HTTPS_PROXY", via.clone())]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("s_server"), "{body}");

    // A tunnel to nowhere is refused with 502 before any TLS starts.
    let dead = format!("https://127.0.0.1:{}/", free_port());
    let (code, _, err) = curl(&["-k", "-x", &via, &dead]);
    assert_ne!(code, 0);
    assert!(err.contains("502"), "{err}");

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let ends: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "flow_end" && e["route"] == "tunnel")
        .collect();
    assert_eq!(ends.len(), 2, "{events:?}");
    for end in ends {
        assert_eq!(end["protocol"], "tls", "{end}");
        assert_eq!(end["server"], tls.to_string());
        assert!(end["bytes_from_client"].as_u64().unwrap() > 100, "{end}");
        assert!(end["bytes_from_server"].as_u64().unwrap() > 1000, "{end}");
        assert_eq!(end["end"], "fin", "{end}");
    }
}

#[test]
fn a_raw_tunnel_carries_a_server_that_speaks_first() {
    let banner_server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = banner_server.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = banner_server.accept().unwrap();
        s.write_all(b"220 hello\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        s.write_all(format!("250 got {line}").as_bytes()).unwrap();
    });
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let (mut p, listen) = start_proxy(&["--output", events.to_str().unwrap()]);

    // A tunnel to the proxy itself is refused, not looped.
    let mut own = TcpStream::connect(listen).unwrap();
    own.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(own, "CONNECT {listen} HTTP/1.1\r\nHost: {listen}\r\n\r\n").unwrap();
    let mut refusal = String::new();
    BufReader::new(own).read_line(&mut refusal).unwrap();
    assert!(refusal.starts_with("HTTP/1.1 508"), "{refusal}");

    let mut s = connect_tunnel(listen, target);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut banner = String::new();
    reader.read_line(&mut banner).unwrap();
    assert_eq!(banner, "220 hello\r\n");
    s.write_all(b"HELO tapline\r\n").unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "250 got HELO tapline\r\n");
    drop((s, reader));

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let end = events
        .iter()
        .find(|e| e["kind"] == "flow_end" && e["route"] == "tunnel")
        .expect("the tunnel is reported");
    assert_eq!(end["protocol"], "tcp");
    assert_eq!(end["bytes_from_server"], 11 + 22);
    assert_eq!(end["bytes_from_client"], 14);
}
