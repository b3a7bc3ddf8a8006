//! Hot reload of Lua plugins in `tapline proxy`: a plugin rewritten under load (wrk through an
//! `http` mapping to `tapline demo`) serves the new version to new and open connections with
//! no request failing; a broken version warns once and the old one keeps serving; SIGHUP
//! reloads with watching off; `tap.shared` survives and `on_stop`/`on_start` run; a live
//! capture reloads too.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A plugin that stamps every response with `x-version: VERSION`.
fn versioned(version: u32) -> String {
    format!(
        r#"
local p = {{ name = "stamp" }}
function p.on_response(resp, flow)
  resp.headers:set("x-version", "{version}")
end
return p
"#
    )
}

/// The response head of one request (a fresh connection) to the mapping at `addr`.
fn head_of(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split("\r\n\r\n").next().unwrap().to_string()
}

/// The value of `field` in a response head.
fn field(head: &str, field: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case(field)
            .then(|| value.trim().to_string())
    })
}

/// Requests (fresh connections) until the response's `x-version` is `want`, for at most 5 s.
fn wait_version(addr: SocketAddr, want: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = field(&head_of(addr), "x-version");
        if got.as_deref() == Some(want) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A wrk script tallying the `x-version` of every response and every failure, printed as
/// `versions v1=… v2=… other=…` and `failures socket=… status=…` at the end.
const WRK_SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init() v1, v2, other, bad = 0, 0, 0, 0 end
function response(status, headers, body)
  local v = headers["x-version"]
  if v == "1" then v1 = v1 + 1 elseif v == "2" then v2 = v2 + 1 else other = other + 1 end
  if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local a, b, c, d = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("v1"); b = b + t:get("v2"); c = c + t:get("other"); d = d + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("versions v1=%d v2=%d other=%d\n", a, b, c))
  io.write(string.format("failures socket=%d status=%d non2xx=%d\n",
    e.connect + e.read + e.write + e.timeout, e.status, d))
end
"#;

/// `name=N` from wrk's summary line.
fn tally(out: &str, name: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in wrk's output:\n{out}"))
        .parse()
        .unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_rewritten_plugin_serves_new_and_open_connections_and_a_broken_one_warns_once() {
    if !have("wrk") {
        return;
    }
    let dir = temp_dir();
    let plugin = write_plugin(dir.path(), "stamp.lua", &versioned(1));
    let script = write_plugin(dir.path(), "tally.wrk.lua", WRK_SCRIPT);
    let plugin_arg = plugin.to_string_lossy().into_owned();
    let (_demo, origin) = demo();
    let (proxy, addr) = start_mapping("http", origin, &["--quiet", "--plugin", &plugin_arg]);
    assert_eq!(field(&head_of(addr), "x-version").as_deref(), Some("1"));

    // Keep-alive load for 5 s; the plugin changes under it after 1.5 s.
    let wrk = Command::new("wrk")
        .args(["-t1", "-c4", "-d5s", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    write(&plugin, &versioned(2));
    let saved = Instant::now();
    assert_eq!(wait_version(addr, "2").as_deref(), Some("2"));
    assert!(
        saved.elapsed() < Duration::from_secs(3),
        "{:?}",
        saved.elapsed()
    );
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {report}");
    assert!(tally(&report, "v1") > 0, "{report}");
    assert!(
        tally(&report, "v2") > 0,
        "open connections moved to v2:\n{report}"
    );
    for no in ["other", "socket", "status", "non2xx"] {
        assert_eq!(tally(&report, no), 0, "{no}:\n{report}");
    }

    // A syntax error: version 2 keeps serving, one warning names the file and line.
    write(
        &plugin,
        "return {\n  on_response = function(resp) end\n  oops = 1\n}\n",
    );
    std::thread::sleep(Duration::from_millis(800));
    for _ in 0..5 {
        assert_eq!(field(&head_of(addr), "x-version").as_deref(), Some("2"));
    }
    let warnings: Vec<String> = proxy
        .stderr()
        .lines()
        .filter(|l| l.contains("reload failed"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let expected = format!("plugin {} reload failed: {}:3:", plugin_arg, plugin_arg);
    assert!(warnings[0].contains(&expected), "{warnings:?}");

    // Fixed: it reloads as usual.
    write(&plugin, &versioned(3));
    assert_eq!(wait_version(addr, "3").as_deref(), Some("3"));
    let mut proxy = proxy;
    assert_eq!(proxy.stop(Duration::from_secs(10)), Some(0));
    let stderr = proxy.stderr();
    assert!(
        stderr.contains("reloads 2, failed reloads 1"),
        "stats:\n{stderr}"
    );
}

#[test]
fn sighup_reloads_with_watching_off() {
    let dir = temp_dir();
    let plugin = write_plugin(dir.path(), "stamp.lua", &versioned(1));
    let plugin_arg = plugin.to_string_lossy().into_owned();
    let (_demo, origin) = demo();
    let (proxy, addr) = start_mapping(
        "http",
        origin,
        &["--quiet", "--no-plugin-watch", "--plugin", &plugin_arg],
    );
    write(&plugin, &versioned(2));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        field(&head_of(addr), "x-version").as_deref(),
        Some("1"),
        "not watched"
    );
    proxy.signal("HUP");
    assert_eq!(wait_version(addr, "2").as_deref(), Some("2"));
}

#[test]
fn shared_values_survive_and_on_stop_and_on_start_run_per_version() {
    let dir = temp_dir();
    let source = |version: u32| {
        format!(
            r#"
local p = {{ name = "counting" }}
function p.on_start() tap.shared:incr("starts", 1, 0) end
function p.on_stop() tap.shared:incr("stops", 1, 0) end
function p.on_response(resp, flow)
  local hits = tap.shared:incr("hits", 1, 0)
  resp.headers:set("x-version", "{version}")
  resp.headers:set("x-hits", tostring(hits))
  resp.headers:set("x-starts", tostring(tap.shared:get("starts")))
  resp.headers:set("x-stops", tostring(tap.shared:get("stops") or 0))
end
return p
"#
        )
    };
    let plugin = write_plugin(dir.path(), "counting.lua", &source(1));
    let plugin_arg = plugin.to_string_lossy().into_owned();
    let (_demo, origin) = demo();
    let (_proxy, addr) = start_mapping("http", origin, &["--quiet", "--plugin", &plugin_arg]);
    let number = |head: &str, name: &str| -> u64 { field(head, name).unwrap().parse().unwrap() };
    let mut head = String::new();
    for _ in 0..3 {
        head = head_of(addr);
    }
    let (hits, states) = (number(&head, "x-hits"), number(&head, "x-starts"));
    assert_eq!(hits, 3);
    assert_eq!(number(&head, "x-stops"), 0);

    write(&plugin, &source(2));
    assert_eq!(wait_version(addr, "2").as_deref(), Some("2"));
    let head = head_of(addr);
    assert!(number(&head, "x-hits") > hits, "tap.shared kept: {head}");
    assert_eq!(number(&head, "x-starts"), 2 * states, "new states started");
    assert_eq!(number(&head, "x-stops"), states, "old states stopped");
}

#[test]
fn a_live_capture_reloads_its_plugin() {
    if !can_capture() || !have("curl") {
        return;
    }
    let source = |version: u32| {
        format!(
            r#"
local p = {{ name = "seen" }}
function p.on_request(req, flow) tap.emit{{ message = "seen", path = req.path, version = {version} }} end
return p
"#
        )
    };
    let dir = temp_dir();
    let plugin = write_plugin(dir.path(), "seen.lua", &source(1));
    let events = dir.path().join("events.jsonl");
    let (_demo, origin) = demo();
    let mut cmd = tapline();
    cmd.args(["-v", "capture", "-i", "lo", "--quiet", "--plugin"])
        .arg(&plugin)
        .arg("--output")
        .arg(&events)
        .args(["tcp", "port", &origin.port().to_string()]);
    let mut cap = Proc::spawn("tapline capture", cmd);
    cap.wait_output("listening on lo", Duration::from_secs(20));
    curl_ok(&[&format!("http://{origin}/echo?n=1")]);
    std::thread::sleep(Duration::from_millis(300));
    write(&plugin, &source(2));
    cap.wait_output("reloaded: version 2", Duration::from_secs(5));
    curl_ok(&[&format!("http://{origin}/echo?n=2")]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        cap.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        cap.stderr()
    );
    let seen: Vec<(String, u64)> = json_lines(&events)
        .iter()
        .filter(|e| e["kind"] == "record" && e["message"] == "seen")
        .map(|e| {
            let f = &e["fields"];
            (
                f["path"].as_str().unwrap().to_string(),
                f["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("/echo?n=1".to_string(), 1), ("/echo?n=2".to_string(), 2)]
    );
}
