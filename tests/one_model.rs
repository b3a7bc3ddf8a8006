//! One event model in both modes, end to end: the same Lua plugin runs in `tapline proxy` and
//! in a live `tapline capture` of the proxy's upstream leg, at the same time, and both see
//! the same hooks, the same header names (wire case and order, hop-by-hop fields aside), the
//! same bytes and the same JSON events. Also: the origin gets the client's header case after
//! a plugin edit, a Lua hook that raises closes the flow under `--plugin-failure closed`, and
//! HTTP sniffed inside a `tcp` mapping has its verdicts counted, not applied.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    can_capture, demo, free_port, json_lines, local, proxy, start_mapping, tapline, temp_dir,
    write_plugin, Proc,
};
use serde_json::Value;

/// A plugin that reports every hook it gets (as `record` events) and sets one header when it
/// is missing, so that proxy and capture end up with the same request.
const PARITY: &str = r#"
local p = { name = "parity" }
local hop = { connection = true, ["keep-alive"] = true, ["proxy-connection"] = true,
              te = true, upgrade = true, ["proxy-authorization"] = true }
local function names(headers)
  local out = {}
  for name in headers:pairs() do
    if not hop[name:lower()] then out[#out + 1] = name end
  end
  return table.concat(out, ",")
end
function p.on_flow_start(flow) tap.emit{hook = "flow_start", uid = flow.uid} end
function p.on_flow_end(flow) tap.emit{hook = "flow_end"} end
function p.on_request(req, flow)
  if not req.headers:get("x-tap") then req.headers:set("X-Tap", "parity") end
  tap.emit{hook = "request", method = req.method, path = req.path, url = req.url,
           version = req.version, headers = names(req.headers), body = req.body}
end
function p.on_response(resp, flow)
  tap.emit{hook = "response", status = resp.status, reason = resp.reason,
           headers = names(resp.headers), body = resp.body,
           method = resp.request.method, path = resp.request.path}
end
function p.on_transaction(tx, flow)
  tap.emit{hook = "transaction", kind = tx.kind, method = tx.request.method,
           path = tx.request.path, url = tx.request.url, status = tx.response.status}
end
function p.on_data(chunk, flow) tap.emit{hook = "data", from = chunk.from, data = chunk.data} end
return p
"#;

/// Fields that differ between the modes by design (docs/events.md): when, which mode and
/// route, which flow and its ends (the capture sees the proxy's own upstream connection), and
/// latencies (each measured where it was seen).
const DIFFERENT_BY_DESIGN: [&str; 8] = [
    "ts",
    "mode",
    "route",
    "flow",
    "flow_uid",
    "client",
    "server",
    "latency_ms",
];

/// Hop-by-hop fields: the proxy reports what the client sent, the capture what went upstream.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authorization",
    ]
    .contains(&name.to_ascii_lowercase().as_str())
}

/// `v` without the fields that differ by design, with hop-by-hop header fields left out.
fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !DIFFERENT_BY_DESIGN.contains(&k.as_str()))
                .map(|(k, v)| {
                    let v = if k == "headers" {
                        Value::Array(
                            v.as_array()
                                .unwrap()
                                .iter()
                                .filter(|f| !hop_by_hop(f[0].as_str().unwrap()))
                                .cloned()
                                .collect(),
                        )
                    } else {
                        comparable(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A plugin's records by hook, in order.
fn records(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_hook: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "record") {
        let hook = e["fields"]["hook"].as_str().unwrap().to_string();
        by_hook.entry(hook).or_default().push(e["fields"].clone());
    }
    by_hook
}

/// The bytes the `data` records carried, per side, concatenated.
fn data_from(records: &BTreeMap<String, Vec<Value>>, side: &str) -> String {
    records
        .get("data")
        .map(|d| {
            d.iter()
                .filter(|r| r["from"] == side)
                .map(|r| r["data"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The HTTP events in order, made comparable.
fn http_events(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            ["http_request", "http_response", "transaction"].contains(&e["kind"].as_str().unwrap())
        })
        .map(comparable)
        .collect()
}

/// Reads a message head, up to and with its blank line (what there is of it at the end of
/// the stream).
fn read_head(s: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).unwrap_or(0) == 0 {
            return head;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return head;
        }
    }
}

/// Sends `request` on `s` and reads one response (Content-Length or chunked body).
fn exchange(s: &mut BufReader<TcpStream>, request: &str) -> (String, Vec<u8>) {
    s.get_mut().write_all(request.as_bytes()).unwrap();
    let head = read_head(s);
    assert!(head.ends_with("\r\n\r\n"), "closed mid-head: {head}");
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(n) = field("content-length") {
        body.resize(n.parse().unwrap(), 0);
        s.read_exact(&mut body).unwrap();
    } else if field("transfer-encoding").is_some() {
        loop {
            let mut size = String::new();
            s.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            s.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    (head, body)
}

/// The proxied exchanges of the parity test, on one keep-alive connection: a GET with header
/// names in every case, a POST with a body, a chunked response, and a second GET.
fn parity_workload(proxy: SocketAddr, origin: SocketAddr) -> u64 {
    let stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut s = BufReader::new(stream);
    let requests = [
        format!(
            "GET http://{origin}/echo?a=1 HTTP/1.1\r\nHost: {origin}\r\nX-Mixed-Case: 1\r\n\
             x-lower: 2\r\nX-UPPER: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=30\r\n\r\n"
        ),
        format!(
            "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\ncontent-type: text/plain\r\n\
             Content-Length: 11\r\nX-After-Length: yes\r\n\r\nhello world"
        ),
        format!("GET http://{origin}/chunked/3000 HTTP/1.1\r\nHost: {origin}\r\n\r\n"),
        format!("GET http://{origin}/status/404 HTTP/1.1\r\nhost: {origin}\r\n\r\n"),
    ];
    for request in &requests {
        let (head, _) = exchange(&mut s, request);
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
    }
    requests.iter().map(|r| r.len() as u64).sum()
}

#[test]
fn one_plugin_sees_the_same_exchanges_proxied_and_captured() {
    if !can_capture() {
        return;
    }
    let dir = temp_dir();
    let plugin = write_plugin(dir.path(), "parity.lua", PARITY);
    let plugin = plugin.to_str().unwrap();
    let (_demo, origin) = demo();
    let proxied = dir.path().join("proxy.jsonl");
    let captured = dir.path().join("capture.jsonl");

    // The capture sees only the origin's port: the proxy's upstream leg.
    let mut cmd = tapline();
    cmd.args([
        "capture", "-i", "lo", "--quiet", "--plugin", plugin, "--output",
    ])
    .arg(&captured)
    .args(["tcp", "port", &origin.port().to_string()]);
    let mut capture = Proc::spawn("tapline capture", cmd);
    capture.wait_output("listening on lo", Duration::from_secs(20));

    let address = local(free_port());
    let mut proxy = proxy(
        &[
            "--quiet",
            "--proxy-address",
            &address.to_string(),
            "--plugin",
            plugin,
            "--output",
            proxied.to_str().unwrap(),
        ],
        &[address],
    );
    let sent = parity_workload(address, origin);
    // The proxy's stop closes its pooled upstream connection: the capture sees it end.
    assert_eq!(
        proxy.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        capture.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        capture.stderr()
    );

    let proxied = json_lines(&proxied);
    let captured = json_lines(&captured);
    let end = proxied.iter().find(|e| e["kind"] == "flow_end").unwrap();
    assert_eq!(
        end["bytes_from_client"], sent,
        "the flow counts the bytes of its first request too: {end}"
    );
    let (p, c) = (records(&proxied), records(&captured));
    for hook in [
        "flow_start",
        "flow_end",
        "request",
        "response",
        "transaction",
        "data",
    ] {
        assert!(
            p.contains_key(hook),
            "{hook} did not fire in the proxy: {p:#?}"
        );
        assert!(
            c.contains_key(hook),
            "{hook} did not fire in the capture: {c:#?}"
        );
    }
    assert_eq!(p.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
    for hook in ["flow_start", "flow_end"] {
        assert_eq!(p[hook].len(), 1, "one flow each: {hook}");
        assert_eq!(c[hook].len(), 1, "one flow each: {hook}");
    }
    for hook in ["request", "response", "transaction"] {
        assert_eq!(p[hook], c[hook], "{hook}: proxy vs capture");
    }
    assert_eq!(p["request"].len(), 4);
    assert_eq!(
        p["request"][0]["headers"],
        format!("Host,X-Mixed-Case,x-lower,X-UPPER,X-Tap"),
        "wire case and order"
    );
    assert_eq!(
        p["request"][1]["headers"],
        "Host,content-type,Content-Length,X-After-Length,X-Tap"
    );
    // The bytes the proxy wrote upstream and read back are the bytes the capture saw.
    for side in ["client", "server"] {
        let (proxied, seen) = (data_from(&p, side), data_from(&c, side));
        assert!(!proxied.is_empty(), "{side}");
        assert_eq!(proxied, seen, "{side} bytes: proxy vs capture");
    }
    assert!(data_from(&c, "client").contains("X-Mixed-Case: 1\r\nx-lower: 2\r\nX-UPPER: 3\r\n"));

    let (p, c) = (http_events(&proxied), http_events(&captured));
    assert_eq!(p.len(), 12, "{p:#?}");
    for (i, (a, b)) in p.iter().zip(&c).enumerate() {
        assert_eq!(a, b, "event {i}: proxy vs capture");
    }
    assert_eq!(p.len(), c.len());
}

/// An origin that answers each connection's one request with a fixed body and sends the
/// request's head (as received) down `heads`.
fn recording_origin() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(conn) = conn else { continue };
            let mut s = BufReader::new(conn);
            let _ = tx.send(read_head(&mut s));
            let _ = s
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, rx)
}

#[test]
fn the_origin_gets_the_clients_header_case_after_a_plugin_edits_another_header() {
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "edit.lua",
        r#"
local p = { name = "edit" }
function p.on_request(req) req.headers:set("x-edited", "by-plugin"); req.headers:add("X-Added", "1") end
return p
"#,
    );
    let (origin, heads) = recording_origin();
    let address = local(free_port());
    let mut proxy = proxy(
        &[
            "--quiet",
            "--proxy-address",
            &address.to_string(),
            "--plugin",
            plugin.to_str().unwrap(),
        ],
        &[address],
    );
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut s = BufReader::new(stream);
    let (head, body) = exchange(
        &mut s,
        &format!(
            "GET http://{origin}/x HTTP/1.1\r\nHOST: {origin}\r\nUser-Agent: raw\r\n\
             X-Edited: client\r\nx-MiXeD-CaSe: kept\r\nACCEPT: */*\r\n\r\n"
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    let seen = heads.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        seen,
        format!(
            "GET /x HTTP/1.1\r\nHOST: {origin}\r\nUser-Agent: raw\r\nx-edited: by-plugin\r\n\
             x-MiXeD-CaSe: kept\r\nACCEPT: */*\r\nX-Added: 1\r\n\r\n"
        ),
        "every field the plugin left alone keeps the client's case and place"
    );
    proxy.stop(Duration::from_secs(20));
}

#[test]
fn a_lua_hook_that_raises_closes_the_flow_under_plugin_failure_closed() {
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "raises.lua",
        r#"
local p = { name = "raises" }
function p.on_request(req) error("refusing " .. req.path) end
return p
"#,
    );
    let (_demo, origin) = demo();
    let events = dir.path().join("events.jsonl");
    let run = |policy: &str| {
        let address = local(free_port());
        let mut proxy = proxy(
            &[
                "--quiet",
                "--proxy-address",
                &address.to_string(),
                "--plugin",
                plugin.to_str().unwrap(),
                "--plugin-failure",
                policy,
                "--output",
                events.to_str().unwrap(),
            ],
            &[address],
        );
        let mut s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        proxy.stop(Duration::from_secs(20));
        (
            String::from_utf8_lossy(&answer).into_owned(),
            proxy.stderr(),
        )
    };

    let (answer, stderr) = run("closed");
    assert!(
        answer.is_empty(),
        "the flow closes without an answer: {answer}"
    );
    assert!(
        stderr.contains("lua plugin raises: on_request:") && stderr.contains("closing the flow"),
        "{stderr}"
    );
    let end = json_lines(&events)
        .into_iter()
        .find(|e| e["kind"] == "flow_end")
        .unwrap();
    assert_eq!(end["end"], "closed_by_plugin", "{end}");
    assert!(
        end["reason"].as_str().unwrap().contains("refusing /echo"),
        "{end}"
    );

    std::fs::remove_file(&events).unwrap();
    let (answer, stderr) = run("open");
    assert!(answer.starts_with("HTTP/1.1 200"), "fails open: {answer}");
    assert!(stderr.contains("forwarding the original data"), "{stderr}");
}

#[test]
fn http_sniffed_in_a_tcp_mapping_is_observed_and_its_verdicts_counted() {
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "deny.lua",
        r#"
local p = { name = "deny" }
function p.on_request(req) return tap.respond{status = 403, body = "no"} end
function p.on_transaction(tx) tap.emit{status = tx.response.status} end
return p
"#,
    );
    let (_demo, origin) = demo();
    let events = dir.path().join("events.jsonl");
    let (mut mapping, listen) = start_mapping(
        "tcp",
        origin,
        &[
            "--plugin",
            plugin.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
        ],
    );
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /status/201 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 201"),
        "the bytes went on: the origin answered"
    );
    drop(s);
    assert_eq!(mapping.stop(Duration::from_secs(20)), Some(0));
    let stderr = mapping.stderr();
    let stats = stderr.lines().find(|l| l.contains("deny: calls")).unwrap();
    assert!(
        stats.ends_with(
            "errors 0, timeouts 0, dropped 0, ignored verdicts 1, reloads 0, failed reloads 0"
        ),
        "{stderr}"
    );
    let events = json_lines(&events);
    let record = events.iter().find(|e| e["kind"] == "record").unwrap();
    assert_eq!(
        record["fields"]["status"], 201,
        "on_transaction saw the real answer"
    );
    assert!(events
        .iter()
        .any(|e| e["kind"] == "http_request" && e["path"] == "/status/201"));
}
