//! TLS interception of HTTPS: curl through the forward proxy's CONNECT and through an
//! `https` mapping to an `openssl s_server -WWW` origin whose certificate comes from a CA the
//! test makes with openssl (trusted by tapline through `--upstream-ca`); clients trust
//! tapline's CA (`tapline ca`). Plugins, JSON, the untrusting client, the untrusted upstream
//! and `--ignore-hosts` are checked on the real traffic.
mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// `openssl s_server -WWW` serving files from `root` on a free port.
fn https_origin(root: &Path, cert: &Path, key: &Path) -> (Proc, SocketAddr) {
    let addr = local(free_port());
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-WWW",
        "-accept",
        &addr.port().to_string(),
        "-cert",
    ])
    .arg(cert)
    .arg("-key")
    .arg(key)
    .current_dir(root);
    let mut p = Proc::spawn("openssl s_server", cmd);
    p.wait_output("ACCEPT", Duration::from_secs(20));
    (p, addr)
}

/// Everything a test needs: an origin with a few files, its CA, tapline's CA directory.
struct Setup {
    dir: tempfile::TempDir,
    origin_ca: PathBuf,
    origin: SocketAddr,
    _origin: Proc,
}

impl Setup {
    fn new() -> Option<Setup> {
        if !have("openssl") || !have("curl") {
            return None;
        }
        let dir = temp_dir();
        let pki = test_pki(dir.path(), "DNS:localhost,IP:127.0.0.1");
        let (origin_ca, cert, key) = (pki.ca, pki.cert, pki.key);
        let www = dir.path().join("www");
        fs::create_dir_all(www.join("api")).unwrap();
        fs::write(www.join("index.html"), "<h1>origin</h1>\n").unwrap();
        fs::write(www.join("api/items"), "[1,2,3]\n").unwrap();
        fs::write(www.join("blocked"), "secret\n").unwrap();
        let (proc_, origin) = https_origin(&www, &cert, &key);
        Some(Setup {
            dir,
            origin_ca,
            origin,
            _origin: proc_,
        })
    }

    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("tapline-ca")
    }

    fn tapline_ca(&self) -> PathBuf {
        self.ca_dir().join("tapline-ca.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

const PLUGIN: &str = r#"
local p = { name = "https-watch", version = "1.0" }
function p.on_request(req, flow)
  tap.emit{ message = "seen", path = req.path, agent = req.headers:get("X-Agent") or "",
            sni = flow.tls and flow.tls.sni or "", intercepted = flow.tls and flow.tls.intercepted or false }
  if req.path == "/blocked" then
    return tap.respond{ status = 403, body = "blocked by lua\n" }
  end
end
return p
"#;

#[test]
fn https_through_connect_is_decrypted_for_plugins_and_outputs() {
    let Some(s) = Setup::new() else { return };
    let plugin = write_plugin(s.dir.path(), "watch.lua", PLUGIN);
    let events = s.path("events.jsonl");
    let keylog = s.path("keys.log");
    let ca_dir = s.ca_dir();
    let (mut proxy, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--upstream-ca",
        s.origin_ca.to_str().unwrap(),
        "--tls-keylog",
        keylog.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
        "--output",
        events.to_str().unwrap(),
    ]);
    let proxy_url = format!("http://{addr}");
    let base = format!("https://localhost:{}", s.origin.port());
    let ca = s.tapline_ca();
    let ca = ca.to_str().unwrap();
    let body = curl_ok(&[
        "--cacert",
        ca,
        "-x",
        &proxy_url,
        "-H",
        "X-Agent: tls-test",
        &format!("{base}/api/items"),
    ]);
    assert_eq!(body, "[1,2,3]\n");
    let (code, body, err) = curl(&[
        "--cacert",
        ca,
        "-x",
        &proxy_url,
        "-w",
        "%{http_code}",
        &format!("{base}/blocked"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "blocked by lua\n403");

    // A client that does not trust tapline's CA fails the handshake; others go on.
    let (code, _, err) = curl(&["-x", &proxy_url, &format!("{base}/api/items")]);
    assert_eq!(
        code, 60,
        "curl must refuse tapline's certificate without its CA: {err}"
    );
    let again = curl_ok(&[
        "--cacert",
        ca,
        "-x",
        &proxy_url,
        &format!("{base}/index.html"),
    ]);
    assert_eq!(again, "<h1>origin</h1>\n");

    assert_eq!(
        proxy.stop(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let lines = json_lines(&events);
    let seen: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["kind"] == "record" && l["message"] == "seen")
        .collect();
    assert_eq!(seen.len(), 3, "{lines:#?}");
    assert_eq!(seen[0]["fields"]["path"], "/api/items");
    assert_eq!(seen[0]["fields"]["agent"], "tls-test");
    assert_eq!(seen[0]["fields"]["sni"], "localhost");
    assert_eq!(seen[0]["fields"]["intercepted"], true);
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["kind"] == "http_request")
        .collect();
    assert_eq!(requests[0]["url"], format!("{base}/api/items"));
    assert_eq!(requests[0]["route"], "tunnel");
    assert_eq!(requests[0]["tls"]["client"]["alpn"], "http/1.1");
    assert_eq!(requests[0]["tls"]["sni"], "localhost");
    assert!(requests[0]["tls"]["server"]["version"]
        .as_str()
        .unwrap()
        .starts_with("TLSv1."));
    let failed = lines
        .iter()
        .filter(|l| l["kind"] == "flow_end" && l["end"] == "error")
        .count();
    assert_eq!(
        failed, 1,
        "the untrusting client's flow is one error: {lines:#?}"
    );
    let keys = fs::read_to_string(&keylog).unwrap();
    assert!(
        keys.lines()
            .any(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")),
        "{keys}"
    );
    assert!(
        proxy.stderr().contains("connections intercepted"),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn an_untrusted_upstream_gets_a_502_saying_why() {
    let Some(s) = Setup::new() else { return };
    let ca_dir = s.ca_dir();
    let events = s.path("events.jsonl");
    let (mut proxy, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--output",
        events.to_str().unwrap(),
    ]);
    let ca = s.tapline_ca();
    let (code, body, err) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-x",
        &format!("http://{addr}"),
        "-w",
        "%{http_code}",
        &format!("https://localhost:{}/index.html", s.origin.port()),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(body.ends_with("502"), "{body}");
    assert!(body.contains("certificate"), "the reason is given: {body}");
    proxy.stop(Duration::from_secs(15));
    let lines = json_lines(&events);
    assert!(
        lines.iter().any(|l| l["kind"] == "flow_end"
            && l["end"] == "error"
            && l["reason"]
                .as_str()
                .unwrap_or("")
                .contains("TLS handshake with upstream")),
        "{lines:#?}"
    );
}

#[test]
fn ignored_hosts_see_the_origins_own_certificate() {
    let Some(s) = Setup::new() else { return };
    let ca_dir = s.ca_dir();
    let (_proxy, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--ignore-hosts",
        "localhost",
    ]);
    let body = curl_ok(&[
        "--cacert",
        s.origin_ca.to_str().unwrap(),
        "-x",
        &format!("http://{addr}"),
        &format!("https://localhost:{}/index.html", s.origin.port()),
    ]);
    assert_eq!(body, "<h1>origin</h1>\n");
}

#[test]
fn an_https_mapping_is_intercepted_with_https_urls() {
    let Some(s) = Setup::new() else { return };
    let ca_dir = s.ca_dir();
    let events = s.path("events.jsonl");
    let spec_target = format!("localhost:{}", s.origin.port());
    let listen = local(free_port());
    let spec = format!("{}=https://{spec_target}", listen.port());
    let mut proxy = proxy(
        &[
            "--disable-http-proxy",
            "--quiet",
            "--proxy",
            &spec,
            "--intercept-tls",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--upstream-ca",
            s.origin_ca.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
        ],
        &[listen],
    );
    let ca = s.tapline_ca();
    let body = curl_ok(&[
        "--cacert",
        ca.to_str().unwrap(),
        &format!("https://127.0.0.1:{}/api/items", listen.port()),
    ]);
    assert_eq!(body, "[1,2,3]\n");
    proxy.stop(Duration::from_secs(15));
    let lines = json_lines(&events);
    let req = lines
        .iter()
        .find(|l| l["kind"] == "http_request")
        .expect("a decrypted request");
    assert_eq!(req["url"], format!("https://{spec_target}/api/items"));
    assert_eq!(req["route"], "mapping");
}

#[test]
fn the_ca_command_makes_the_ca_once_and_says_how_to_trust_it() {
    let dir = temp_dir();
    let ca_dir = dir.path().join("ca");
    let (code, out, err) = run_tapline(&["ca", "--ca-dir", ca_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("made now"), "{out}");
    for hint in [
        "--cacert",
        "update-ca-certificates",
        "REQUESTS_CA_BUNDLE",
        "certutil",
        "sslrootcert",
    ] {
        assert!(out.contains(hint), "{hint} missing from:\n{out}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(ca_dir.join("tapline-ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, pem, _) = run_tapline(&["ca", "--ca-dir", ca_dir.to_str().unwrap(), "--pem"]);
    assert_eq!(code, 0);
    assert_eq!(
        pem,
        fs::read_to_string(ca_dir.join("tapline-ca.pem")).unwrap()
    );
    let (_, again, _) = run_tapline(&["ca", "--ca-dir", ca_dir.to_str().unwrap()]);
    assert!(again.contains("existing"), "{again}");
}

#[test]
fn bad_tls_settings_are_usage_errors_naming_the_flag() {
    let dir = temp_dir();
    let ca_dir = dir.path().join("ca");
    run_tapline(&["ca", "--ca-dir", ca_dir.to_str().unwrap()]);
    let notes = dir.path().join("notes.txt");
    fs::write(&notes, "not a certificate\n").unwrap();
    let (code, _, err) = run_tapline(&[
        "proxy",
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--upstream-ca",
        notes.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--upstream-ca") && err.contains("no PEM certificate"),
        "{err}"
    );

    fs::write(
        ca_dir.join("tapline-ca-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (code, _, err) = run_tapline(&[
        "proxy",
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tapline-ca-key.pem"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let (code, _, err) = run_tapline(&["proxy", "--intercept-tls", "--ca-dir", "/dev/null/ca"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca-dir /dev/null/ca"), "{err}");

    let (code, _, err) = run_tapline(&["proxy", "--intercept-hosts", "a b"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--intercept-hosts"), "{err}");
}

#[test]
fn garbage_instead_of_tls_is_a_counted_flow_error() {
    use std::io::{Read, Write};
    let dir = temp_dir();
    let ca_dir = dir.path().join("ca");
    let events = dir.path().join("events.jsonl");
    let upstream = echo_server();
    let listen = local(free_port());
    let spec = format!("{}=https://{upstream}", listen.port());
    let mut proxy = proxy(
        &[
            "--disable-http-proxy",
            "--quiet",
            "--proxy",
            &spec,
            "--intercept-tls",
            "--upstream-insecure",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
        ],
        &[listen],
    );
    // Not TLS at all, then a broken hello.
    for bytes in [
        &b"hello there\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0][..],
    ] {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert_eq!(proxy.stop(Duration::from_secs(15)), Some(0));
    let lines = json_lines(&events);
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "flow_end" && l["end"] == "error")
        .filter_map(|l| l["reason"].as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{lines:#?}");
    assert!(
        errors[0].contains("did not open with a TLS hello"),
        "{errors:?}"
    );
    assert!(errors[1].contains("bad TLS hello"), "{errors:?}");
    assert!(proxy.stderr().contains("2 client"), "{}", proxy.stderr());
}

#[test]
fn python_requests_trusting_the_ca_goes_through_and_one_that_does_not_fails_cleanly() {
    let Some(s) = Setup::new() else { return };
    let ok = Command::new("python3")
        .args(["-c", "import requests"])
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !in_ci(),
            "python3 requests missing in CI (.ci/run installs it)"
        );
        eprintln!("SKIP: python3 requests is not installed");
        return;
    }
    let ca_dir = s.ca_dir();
    let (_proxy, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--upstream-ca",
        s.origin_ca.to_str().unwrap(),
    ]);
    let script = r#"
import os, sys, requests
proxies = {"https": sys.argv[1]}
url = sys.argv[2]
r = requests.get(url, proxies=proxies, timeout=20)
print(r.status_code, r.text.strip())
try:
    requests.get(url, proxies=proxies, timeout=20, verify=sys.argv[3])
    print("untrusting client got through")
except requests.exceptions.SSLError as e:
    print("refused:", type(e).__name__)
r = requests.get(url, proxies=proxies, timeout=20)
print(r.status_code, r.text.strip())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(format!("http://{addr}"))
        .arg(format!("https://localhost:{}/api/items", s.origin.port()))
        .arg(&s.origin_ca)
        .env("REQUESTS_CA_BUNDLE", s.tapline_ca())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["200 [1,2,3]", "refused: SSLError", "200 [1,2,3]"]);
}

#[test]
fn http_faults_and_the_pcap_export_work_on_decrypted_https() {
    let Some(s) = Setup::new() else { return };
    if !have("tshark") {
        return;
    }
    let ca_dir = s.ca_dir();
    let pcap = s.path("proxy.pcap");
    let (mut proxy, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--upstream-ca",
        s.origin_ca.to_str().unwrap(),
        "-w",
        pcap.to_str().unwrap(),
    ]);
    let proxy_url = format!("http://{addr}");
    let ca = s.tapline_ca();
    for path in ["/index.html", "/api/items"] {
        curl_ok(&[
            "--cacert",
            ca.to_str().unwrap(),
            "-x",
            &proxy_url,
            &format!("https://localhost:{}{path}", s.origin.port()),
        ]);
    }
    assert_eq!(
        proxy.stop(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let uris = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("tcp.port=={},http", s.origin.port())])
        .args([
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        ])
        .output()
        .unwrap();
    let uris = String::from_utf8_lossy(&uris.stdout);
    let uris: Vec<&str> = uris.lines().collect();
    assert_eq!(
        uris,
        ["/index.html", "/api/items"],
        "tshark reads the decrypted requests"
    );

    let (_faulty, addr) = start_proxy(&[
        "--intercept-tls",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--upstream-ca",
        s.origin_ca.to_str().unwrap(),
        "--with-http-response",
        "--http-response-status",
        "418",
        "--http-response-trigger-probability",
        "1",
    ]);
    let (code, body, err) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-x",
        &format!("http://{addr}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://localhost:{}/index.html", s.origin.port()),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "418", "the HTTP fault answers over TLS");
}
