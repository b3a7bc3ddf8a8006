//! A clean stop loses nothing: SIGTERM a proxy (and a capture) while HTTP and PostgreSQL
//! traffic is still flowing, then check that no output holds a partial JSON line, every alert
//! the run recorded reached rsyslog over TCP, both pcap files (proxy `-w` and capture `-w`)
//! read cleanly with tshark, and tshark decodes the proxy export's HTTP requests and
//! PostgreSQL queries.

mod common;
mod rsyslog;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{demo, free_port, have, local, proxy, tapline, temp_dir, Postgres, Proc};
use rsyslog::Rsyslog;
use serde_json::Value;

const PLUGIN: &str = r#"
local p = { name = "ua-watch", version = "1.0" }
function p.on_request(req, flow)
    tap.alert("request", { path = req.path })
end
return p
"#;

/// One GET through the proxy; None when the proxy is gone (it is being stopped).
fn try_get(proxy: SocketAddr, url: &str) -> Option<()> {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let host = url.trim_start_matches("http://").split('/').next()?;
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    Some(())
}

/// Every line of `text` is a whole JSON object, and the text ends with a newline.
fn whole_json_lines(what: &str, text: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} ends mid-line"
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: partial line {l:?}: {e}"))
        })
        .collect()
}

/// Runs tshark; asserts it read the whole file without complaint.
fn tshark(pcap: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark {pcap:?} {args:?}: {stderr}");
    assert!(
        !stderr.contains("cut short") && !stderr.contains("isn't a capture file"),
        "{pcap:?} is damaged: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sigterm_mid_traffic_loses_nothing() {
    if !have("tshark") {
        return;
    }
    let Some(rsyslog) = Rsyslog::start() else {
        return;
    };
    let Some(pg) = Postgres::start() else {
        return;
    };
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let plugin = dir.path().join("ua_watch.lua");
    fs::write(&plugin, PLUGIN).unwrap();
    let (events_file, proxy_pcap, capture_pcap) = (
        dir.path().join("events.jsonl"),
        dir.path().join("proxy.pcap"),
        dir.path().join("capture.pcap"),
    );

    // A capture of the origin's traffic on lo, stopped by SIGTERM too.
    let mut capture_cmd = tapline();
    capture_cmd
        .args(["capture", "-i", "lo", "--quiet", "-w"])
        .arg(&capture_pcap)
        .arg(format!("tcp port {}", origin.port()));
    let mut capture = Proc::spawn("tapline capture", capture_cmd);
    capture.wait_output("listening on lo", Duration::from_secs(20));

    let listen = local(free_port());
    let pg_listen = local(free_port());
    let mut p = proxy(
        &[
            "--proxy-address",
            &listen.to_string(),
            "--proxy",
            &format!("{}=psql://{}", pg_listen.port(), pg.addr),
            "--plugin",
            plugin.to_str().unwrap(),
            "--syslog",
            &rsyslog.tcp_url(),
            "--json",
            "--output",
            events_file.to_str().unwrap(),
            "-w",
            proxy_pcap.to_str().unwrap(),
        ],
        &[listen, pg_listen],
    );

    // Traffic that keeps going while the proxy stops.
    let running = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU32::new(0));
    let http = {
        let (running, sent) = (running.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while running.load(Ordering::Relaxed) {
                n += 1;
                if try_get(listen, &format!("http://{origin}/bytes/10?n={n}")).is_some() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sql = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while running.load(Ordering::Relaxed) && n < 50 {
                n += 1;
                let _ = Postgres::psql(pg_listen, &format!("SELECT 'tapline-{n}' AS tag"));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.load(Ordering::Relaxed) < 20 || !p.stdout().contains("tapline-2") {
        assert!(Instant::now() < deadline, "no traffic:\n{}", p.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both stop while requests are still being sent.
    assert_eq!(
        capture.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        capture.stderr()
    );
    assert_eq!(p.stop(Duration::from_secs(20)), Some(0), "{}", p.stderr());
    running.store(false, Ordering::Relaxed);
    http.join().unwrap();
    sql.join().unwrap();

    // No partial JSON line on stdout or in the file, and both hold the same events.
    let stdout_events = whole_json_lines("stdout", &p.stdout());
    let file_events = whole_json_lines("--output", &fs::read_to_string(&events_file).unwrap());
    assert_eq!(stdout_events.len(), file_events.len());
    let of_kind =
        |kind: &str| -> Vec<&Value> { file_events.iter().filter(|e| e["kind"] == kind).collect() };

    // Every alert the run recorded reached rsyslog over TCP.
    let alerts: BTreeSet<String> = of_kind("alert")
        .iter()
        .map(|e| e["fields"]["path"].as_str().unwrap().to_string())
        .collect();
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    let received: BTreeSet<String> = rsyslog
        .wait_fields(alerts.len(), Duration::from_secs(20))
        .iter()
        .filter(|f| f[4] == "alert")
        .filter_map(|f| {
            let sd = &f[5];
            let start = sd.find("path=\"")? + 6;
            Some(sd[start..start + sd[start..].find('"')?].to_string())
        })
        .collect();
    assert_eq!(received, alerts, "rsyslog got every alert");

    // The proxy export: readable, HTTP requests and PostgreSQL queries decoded.
    tshark(&proxy_pcap, &["-q"]);
    // tshark picks dissectors by port, and an ephemeral client port can be another protocol's
    // registered one (48898 is ADS/AMS): decode every port of the flows as their protocol.
    let decode_as = |protocol: &str, dissector: &str| -> Vec<String> {
        let ports: BTreeSet<String> = of_kind("flow_start")
            .iter()
            .filter(|e| e["protocol"] == protocol)
            .flat_map(|e| [&e["client"], &e["server"]])
            .filter_map(|a| Some(a.as_str()?.rsplit(':').next()?.to_string()))
            .collect();
        ports
            .iter()
            .flat_map(|p| ["-d".to_string(), format!("tcp.port=={p},{dissector}")])
            .collect()
    };
    let mut http_args = decode_as("http", "http");
    http_args.extend(
        [
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        ]
        .map(String::from),
    );
    let http_args: Vec<&str> = http_args.iter().map(String::as_str).collect();
    let uris: Vec<String> = tshark(&proxy_pcap, &http_args)
        .lines()
        .map(str::to_string)
        .collect();
    let paths = |kind: &str| -> BTreeSet<String> {
        of_kind(kind)
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    };
    let (requests, answered) = (paths("http_request"), paths("http_response"));
    let decoded: BTreeSet<String> = uris.iter().cloned().collect();
    assert_eq!(
        decoded.len(),
        uris.len(),
        "each request once in the export: {uris:?}"
    );
    // Every exchange the proxy completed is in the export; one cut off by the stop may be
    // there with its request only, or not at all; nothing else is.
    assert!(
        answered.is_subset(&decoded) && decoded.is_subset(&requests),
        "tshark decodes every proxied HTTP request:\nanswered {answered:?}\ndecoded {decoded:?}\nrequested {requests:?}"
    );
    assert!(answered.len() >= 20, "{} answered", answered.len());
    let mut pg_args = decode_as("postgres", "pgsql");
    pg_args.extend(["-Y", "pgsql.query", "-T", "fields", "-e", "pgsql.query"].map(String::from));
    let pg_args: Vec<&str> = pg_args.iter().map(String::as_str).collect();
    let queries = tshark(&proxy_pcap, &pg_args);
    let sent_sql: Vec<&str> = of_kind("message")
        .iter()
        .filter(|e| e["type"] == "Query")
        .filter_map(|e| e["fields"]["sql"].as_str())
        .collect();
    assert!(sent_sql.len() >= 2, "{sent_sql:?}");
    for q in &sent_sql {
        assert!(queries.lines().any(|l| l == *q), "{q} in {queries}");
    }

    // The capture's own pcap reads cleanly and holds the origin's traffic.
    let packets = tshark(&capture_pcap, &["-T", "fields", "-e", "tcp.port"]);
    assert!(packets.lines().count() > 20, "{packets}");
}
