//! CONNECT tunnels on the forward proxy: curl over TLS to a real `openssl s_server`, and a
//! raw tunnel to a server that speaks first.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, have, json_lines, proxy, temp_dir, Proc};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A throwaway self-signed certificate and `openssl s_server -www` on a free port.
fn tls_server(dir: &std::path::Path) -> (Proc, SocketAddr) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req failed");
    let addr = local(free_port());
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-www", "-accept", &addr.to_string(), "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    let mut p = Proc::spawn("openssl s_server", cmd);
    p.wait_output("ACCEPT", Duration::from_secs(20));
    (p, addr)
}

fn curl(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"]).args(args);
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_reaches_a_tls_server_through_a_connect_tunnel() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let (_server, tls) = tls_server(dir.path());
    let listen = local(free_port());
    let events = dir.path().join("events.jsonl");
    let mut p = proxy(
        &[
            "--proxy-address",
            &listen.to_string(),
            "--quiet",
            "--output",
            events.to_str().unwrap(),
        ],
        &[listen],
    );
    let via = format!("http://{listen}");
    let url = format!("https://{tls}/");

    let (code, body, err) = curl(&["-k", "-x", &via, &url], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("s_server"), "{body}");

    let (code, body, err) = curl(&["-k", &url], &[("HTTPS_PROXY", via.clone())]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("s_server"), "{body}");

    // A tunnel to nowhere is refused with 502 before any TLS starts.
    let dead = format!("https://127.0.0.1:{}/", free_port());
    let (code, _, err) = curl(&["-k", "-x", &via, &dead], &[]);
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
    let listen = local(free_port());
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let mut p = proxy(
        &[
            "--proxy-address",
            &listen.to_string(),
            "--quiet",
            "--output",
            events.to_str().unwrap(),
        ],
        &[listen],
    );

    // A tunnel to the proxy itself is refused, not looped.
    let mut own = TcpStream::connect(listen).unwrap();
    own.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(own, "CONNECT {listen} HTTP/1.1\r\nHost: {listen}\r\n\r\n").unwrap();
    let mut refusal = String::new();
    BufReader::new(own).read_line(&mut refusal).unwrap();
    assert!(refusal.starts_with("HTTP/1.1 508"), "{refusal}");

    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
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
