//! Loopback peers and clients for the end-to-end tests: addresses, an echo server, a TLS
//! origin (`openssl s_server`) and curl without the environment's proxy settings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, run_ok, Proc};

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A TCP server on a free port echoing every byte back, one thread per connection; it
/// serves until the test process ends.
pub fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A throwaway self-signed certificate in `dir` and `openssl s_server -www` on a free port.
pub fn tls_server(dir: &Path) -> (Proc, SocketAddr) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let made = Command::new("openssl")
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
    assert!(made.success(), "openssl req failed");
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

/// Opens a CONNECT tunnel through the forward proxy `proxy` to `target`: asserts the proxy
/// answers 200 and returns the stream just past that answer (with a 20 s read timeout).
pub fn connect_tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "tunnel closed before its answer"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// `curl -sS --max-time 30 ARGS` with no proxy settings inherited from the environment,
/// plus the variables `env`.
fn curl_command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"]).args(args);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
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
    cmd
}

/// curl with `args` and no proxy settings from the environment: (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    curl_env(args, &[])
}

/// [`curl`] with the environment variables `env` set (e.g. `http_proxy`).
pub fn curl_env(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = curl_command(args, env).output().expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`curl`] that must succeed (the assertion shows curl's stderr); its stdout.
pub fn curl_ok(args: &[&str]) -> String {
    run_ok("curl", &mut curl_command(args, &[]))
}

/// Reads one HTTP head (through its empty line) byte by byte, so nothing after it is
/// consumed; panics when the stream ends first.
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("head ended early ({other:?}): {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
