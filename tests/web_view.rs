//! The live web view (`--web`) in a real browser, Debian's headless Chromium driven by
//! Python playwright (`tests/web/view.py`): rows appear as traffic flows, the filter
//! narrows them, a click shows a request's headers and body and a statement's SQL and
//! parameters; a capture file's rows are all there and the page says the source ended.
//! Screenshots go to `target/test-output/web_view/`. Then the token, and bad input.

mod common;
mod encap;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn browser_ready() -> bool {
    if !have("chromium") || !python_has("playwright") {
        assert!(!in_ci(), "chromium and playwright are installed in CI");
        eprintln!("SKIP: Debian's chromium or Python playwright is missing");
        return false;
    }
    true
}

fn screenshot(name: &str) -> PathBuf {
    let dir = repo_root().join("target/test-output/web_view");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the page driver; what it saw.
fn drive(args: &[&str]) -> serde_json::Value {
    let script = repo_root().join("tests/web/view.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "view.py {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("view.py prints JSON")
}

/// `GET path` on the view; (status, body).
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn proxy_view_shows_live_rows_filters_and_details() {
    if !browser_ready() {
        return;
    }
    let (_demo, origin) = demo();
    let pg = if have_psycopg() {
        Postgres::start()
    } else {
        None
    };
    let (forward, web, mapping) = (local(free_port()), local(free_port()), local(free_port()));
    let mut args = vec![
        "--quiet".to_string(),
        "--proxy-address".into(),
        forward.to_string(),
        "--web".into(),
        web.to_string(),
    ];
    if let Some(pg) = &pg {
        args.extend([
            "--proxy".into(),
            format!("{}=psql://{}", mapping.port(), pg.addr),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _proxy = proxy(&args, &[forward, web]);
    let shot = screenshot("proxy.png");
    let pg_arg = if pg.is_some() {
        mapping.to_string()
    } else {
        "-".into()
    };
    let seen = drive(&[
        "proxy",
        &format!("http://{web}/"),
        shot.to_str().unwrap(),
        &forward.to_string(),
        &origin.to_string(),
        &pg_arg,
    ]);
    eprintln!("{seen:#}");
    assert_eq!(seen["rows_before"], 0, "no traffic yet");
    assert!(
        seen["rows_after"].as_u64().unwrap() >= 5,
        "rows came without a reload"
    );
    let filtered = seen["filtered"].as_array().unwrap();
    assert_eq!(filtered.len(), 1, "the filter keeps one row: {filtered:?}");
    assert!(filtered[0].as_str().unwrap().contains("/status/404"));
    assert_eq!(seen["errors_only"], serde_json::json!(["404"]));
    let headers = seen["request_headers"].as_str().unwrap();
    assert!(
        headers.contains("User-Agent") && headers.contains("tapline-web-test"),
        "{headers}"
    );
    assert!(
        seen["request_body"]
            .as_str()
            .unwrap()
            .contains("\"order\": 42"),
        "JSON pretty-printed"
    );
    if pg.is_some() {
        assert!(seen["sql"]
            .as_str()
            .unwrap()
            .contains("select $1::int + $2::int"));
        let params = seen["params"].as_str().unwrap();
        assert!(
            params.contains("$1\t20") && params.contains("$2\t22"),
            "{params}"
        );
    }
    assert!(shot.exists());
}

#[test]
fn capture_view_lists_every_transaction_and_says_the_source_ended() {
    if !browser_ready() {
        return;
    }
    let web = local(free_port());
    let sample = repo_root().join("samples/sample.pcap");
    let mut cmd = tapline();
    cmd.args(["capture", "-q", "-r", sample.to_str().unwrap(), "--web"])
        .arg(web.to_string())
        .args(["--duration", "60s"]);
    let mut capture = Proc::spawn("tapline capture --web", cmd);
    capture.wait_port(web, Duration::from_secs(10));
    // 18 transactions and 9 flow ends.
    let shot = screenshot("capture.png");
    let seen = drive(&[
        "capture",
        &format!("http://{web}/"),
        shot.to_str().unwrap(),
        "27",
    ]);
    eprintln!("{seen:#}");
    assert_eq!(seen["rows"], 27);
    assert!(seen["state"].as_str().unwrap().contains("source ended"));
    assert!(seen["request_headers"].as_str().unwrap().contains("Host"));
    assert!(
        seen["body"].as_str().unwrap().contains("\"plan\": \"pro\""),
        "{seen}"
    );
    let (status, body) = get(web, "/api/rows", "");
    assert_eq!(status, 200);
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let transactions = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "transaction")
        .count();
    assert_eq!(transactions, 18, "every transaction of the file");
    capture.signal("INT");
    assert_eq!(capture.wait_exit(Duration::from_secs(10)), Some(0));
}

/// The sample's first HTTP flow (client port 55012) copied `flows` times on other client
/// ports, one after another: a transaction and a flow end each.
fn many_flows(flows: u16) -> Vec<encap::Packet> {
    let sample = encap::read_pcap(&repo_root().join("samples/sample.pcap"));
    let first: Vec<_> = sample
        .into_iter()
        .filter(|(_, _, f)| {
            f.len() >= 38 && (f[34..36] == [0xd6, 0xe4] || f[36..38] == [0xd6, 0xe4])
        })
        .collect();
    let mut out = Vec::new();
    for n in 0..flows {
        let port = (10_000 + n).to_be_bytes();
        for (secs, micros, frame) in &first {
            let mut f = frame.clone();
            let at = if f[34..36] == [0xd6, 0xe4] { 34 } else { 36 };
            f[at..at + 2].copy_from_slice(&port);
            out.push((secs + u32::from(n / 100), *micros, f));
        }
    }
    out
}

#[test]
fn a_burst_of_ten_thousand_rows_renders_and_is_timed() {
    if !browser_ready() {
        return;
    }
    let dir = temp_dir();
    let file = dir.path().join("burst.pcap");
    encap::write_pcap(&file, 1, &many_flows(5_000));
    let web = local(free_port());
    let mut cmd = tapline();
    cmd.args(["capture", "-q", "-r", file.to_str().unwrap(), "--web"])
        .arg(web.to_string())
        .args(["--duration", "90s"]);
    let mut capture = Proc::spawn("tapline capture --web (burst)", cmd);
    capture.wait_port(web, Duration::from_secs(10));
    let shot = screenshot("burst.png");
    let seen = drive(&[
        "capture",
        &format!("http://{web}/"),
        shot.to_str().unwrap(),
        "10000",
    ]);
    eprintln!(
        "web view: 10,000 rows from page load to rendered in {} ms ({} ms of page script)",
        seen["render_ms"], seen["busy_ms"]
    );
    assert_eq!(seen["rows"], 10_000);
    capture.signal("INT");
    assert_eq!(capture.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_token_is_required_off_loopback_and_checked_on_every_request() {
    let (code, _, stderr) =
        run_tapline(&["capture", "-r", "samples/sample.pcap", "--web", "0.0.0.0:1"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--web-token"), "{stderr}");

    let port = free_port();
    let mut cmd = tapline();
    cmd.current_dir(repo_root())
        .args(["capture", "-q", "-r", "samples/sample.pcap", "--web"])
        .arg(format!("0.0.0.0:{port}"))
        .args(["--web-token", "s3cret", "--duration", "30s"]);
    let mut capture = Proc::spawn("tapline capture --web-token", cmd);
    let web = local(port);
    capture.wait_port(web, Duration::from_secs(10));
    assert_eq!(get(web, "/", "").0, 401);
    assert_eq!(
        get(web, "/api/stream", "").0,
        401,
        "the live stream refuses it"
    );
    assert_eq!(get(web, "/api/rows?token=wrong", "").0, 401);
    assert_eq!(get(web, "/?token=s3cret", "").0, 200);
    assert_eq!(
        get(web, "/api/rows", "Authorization: Bearer s3cret\r\n").0,
        200
    );
    capture.signal("TERM");
    assert_eq!(capture.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn bad_input_gets_clear_answers_and_a_stalled_reader_stalls_nothing() {
    let (_demo, origin) = demo();
    let web = local(free_port());
    let (mut proxy, forward) = start_proxy(&["--web", &web.to_string()]);
    proxy.wait_port(web, Duration::from_secs(10));

    // The address is taken now: a second view there is a usage error.
    let (code, _, stderr) = run_tapline(&[
        "capture",
        "-r",
        "samples/sample.pcap",
        "--web",
        &web.to_string(),
    ]);
    assert_eq!((code, stderr.trim().lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("--web"), "{stderr}");

    assert_eq!(get(web, "/no/such/page", "").0, 404);
    let huge = format!("/api/download.jsonl?re={}", "a".repeat(5000));
    let (status, body) = get(web, &huge, "");
    assert_eq!(status, 400);
    assert!(body.contains("regex is 5000 bytes long"), "{body}");

    // A reader of the live stream that never reads: traffic and other readers go on.
    let mut stalled = TcpStream::connect(web).unwrap();
    write!(stalled, "GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    for i in 0..300 {
        let (status, _) = http_get_via(forward, &format!("http://{origin}/bytes/{}", 2000 + i));
        assert_eq!(status, 200);
    }
    let (status, body) = get(web, "/api/stats", "");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(stats["rows_total"].as_u64().unwrap() >= 300, "{stats}");
    let (status, body) = get(web, "/api/download.har?status=2xx", "");
    assert_eq!(status, 200);
    let har: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 300);
    drop(stalled);
}

/// The stats the page's header reads, as JSON.
fn stats(web: SocketAddr) -> serde_json::Value {
    let (status, body) = get(web, "/api/stats", "");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_view_shows_each_plugins_loaded_version_and_last_reload_error() {
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "tagger.lua",
        "local p = { name = 'tagger', version = '1' }\nfunction p.on_request(req, flow) end\nreturn p\n",
    );
    let web = local(free_port());
    let (mut proxy, _) = start_proxy(&[
        "--web",
        &web.to_string(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    proxy.wait_port(web, Duration::from_secs(10));
    let tagger = |s: &serde_json::Value| {
        s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "tagger")
            .cloned()
            .expect("the plugin's entry")
    };
    assert_eq!(tagger(&stats(web))["version"], 1);
    std::fs::write(&plugin, "local p = { name = 'tagger'\nreturn p\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tagger(&stats(web))["last_error"].is_null() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let broken = tagger(&stats(web));
    assert_eq!(broken["version"], 1, "the old version goes on");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("tagger.lua:"),
        "{broken}"
    );
    std::fs::write(
        &plugin,
        "local p = { name = 'tagger', version = '2' }\nfunction p.on_request(req, flow) end\nreturn p\n",
    )
    .unwrap();
    while tagger(&stats(web))["version"] == 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fixed = tagger(&stats(web));
    assert_eq!(
        (fixed["version"].as_u64(), fixed["last_error"].is_null()),
        (Some(2), true),
        "{fixed}"
    );
}

#[test]
fn a_collector_shows_what_the_agents_exported() {
    let Some(broker) = Broker::start(BrokerKind::Redis) else {
        return;
    };
    let stream = broker.url("webview");
    let sample = repo_root().join("samples/sample.pcap");
    let (code, _, err) = run_tapline(&[
        "capture",
        "-q",
        "-r",
        sample.to_str().unwrap(),
        "--export",
        &stream,
        "--agent-id",
        "edge-1",
    ]);
    assert_eq!(code, 0, "{err}");
    let web = local(free_port());
    let mut cmd = tapline();
    cmd.args(["collect", "-q", "--from", &stream, "--web"])
        .arg(web.to_string())
        .args(["--duration", "30s"]);
    let mut collect = Proc::spawn("tapline collect --web", cmd);
    collect.wait_port(web, Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let (_, body) = get(web, "/api/rows", "");
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        if rows["total"] == 27 || std::time::Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rows["total"], 27, "18 transactions and 9 flow ends: {rows}");
    assert!(rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["agent"] == "edge-1"));
    let (status, body) = get(web, "/api/download.jsonl?proto=postgres&errors=1", "");
    assert_eq!(status, 200);
    assert!(
        body.lines().count() >= 1 && body.contains("error_code"),
        "{body}"
    );
    collect.signal("TERM");
    assert_eq!(collect.wait_exit(Duration::from_secs(15)), Some(0));
}
