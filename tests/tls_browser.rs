//! A real browser through the intercepting proxy: Debian's headless Chromium, driven by
//! Python playwright (its own browser download is never used: `executable_path` points at
//! /usr/bin/chromium), trusting tapline's CA through an NSS database the test makes with
//! certutil, loads an HTTPS page with a script and an image; every resource shows up as a
//! decrypted `http_response`.
mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Python's threading HTTPS server over `root` (HTTP/1.1 keep-alive, proper content types).
const ORIGIN: &str = r#"
import http.server, ssl, sys, functools
root, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("serving", flush=True)
httpd.serve_forever()
"#;

/// Loads the page through the proxy and reports what the browser saw.
const BROWSER: &str = r#"
import sys
from playwright.sync_api import sync_playwright
proxy, url = sys.argv[1], sys.argv[2]
with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--proxy-server=" + proxy, "--proxy-bypass-list=<-loopback>"],
    )
    page = browser.new_page()
    page.goto(url, wait_until="load", timeout=30000)
    page.wait_for_function("document.title == 'script ran'", timeout=30000)
    print("title", page.title())
    print("image", page.evaluate("document.querySelector('img').naturalWidth"))
    browser.close()
"#;

/// An NSS database under `home` (where Chromium looks) trusting `ca`.
fn nss_db(home: &Path, ca: &Path) {
    let db = home.join(".pki/nssdb");
    fs::create_dir_all(&db).unwrap();
    let sql = format!("sql:{}", db.display());
    run_ok(
        "certutil -N",
        Command::new("certutil").args(["-d", &sql, "-N", "--empty-password"]),
    );
    run_ok(
        "certutil -A",
        Command::new("certutil")
            .args(["-d", &sql, "-A", "-t", "C,,", "-n", "tapline"])
            .arg("-i")
            .arg(ca),
    );
}

#[test]
fn chromium_loads_an_https_page_with_every_resource_decrypted() {
    if !have("chromium") || !have("certutil") || !have("openssl") || !python_has("playwright") {
        return;
    }
    let dir = temp_dir();
    let pki = test_pki(dir.path(), "DNS:localhost,IP:127.0.0.1");
    let www = dir.path().join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(
        www.join("index.html"),
        "<!doctype html><html><head><title>page</title><script src=\"app.js\"></script></head>\
         <body><img src=\"logo.png\"></body></html>\n",
    )
    .unwrap();
    fs::write(www.join("app.js"), "document.title = 'script ran';\n").unwrap();
    fs::write(www.join("logo.png"), PNG).unwrap();
    let origin: SocketAddr = local(free_port());
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ORIGIN])
        .arg(&www)
        .arg(origin.port().to_string())
        .arg(&pki.cert)
        .arg(&pki.key);
    let mut origin_proc = Proc::spawn("python https origin", cmd);
    origin_proc.wait_output("serving", Duration::from_secs(20));

    let ca_dir = dir.path().join("ca");
    let events = dir.path().join("events.jsonl");
    let (mut proxy, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--upstream-ca",
        pki.ca.to_str().unwrap(),
        "--output",
        events.to_str().unwrap(),
    ]);
    let home = dir.path().join("home");
    nss_db(&home, &ca_dir.join("tapline-ca.pem"));
    let url = format!("https://localhost:{}/index.html", origin.port());
    let out = Command::new("python3")
        .args(["-c", BROWSER])
        .arg(format!("http://{addr}"))
        .arg(&url)
        .env("HOME", &home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["title script ran", "image 1"]
    );
    assert_eq!(
        proxy.stop(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let lines = json_lines(&events);
    let base = format!("https://localhost:{}", origin.port());
    for path in ["/index.html", "/app.js", "/logo.png"] {
        assert!(
            lines.iter().any(|l| l["kind"] == "http_response"
                && l["url"] == format!("{base}{path}")
                && l["status"] == 200),
            "{path} is missing from the decrypted responses: {lines:#?}"
        );
    }
}
