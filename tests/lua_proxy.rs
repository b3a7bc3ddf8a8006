//! Lua plugins in `tapline proxy`: every request/response/chunk verdict applied on real
//! traffic (curl through the forward proxy to `tapline demo`, raw sockets through a tcp
//! mapping to an echo server), mixed with a gRPC plugin, and plugins that fail or spin.
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Reads whatever arrives within `wait` (stops early once `want` bytes are in).
fn read_for(s: &mut TcpStream, want: usize, wait: Duration) -> Result<Vec<u8>, ErrorKind> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want && Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                return if got.is_empty() {
                    Err(ErrorKind::UnexpectedEof)
                } else {
                    Ok(got)
                }
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.kind()),
        }
    }
    Ok(got)
}

const HTTP_PLUGIN: &str = r#"
local p = { name = "http-verdicts", version = "1.0" }
local tag = "?"
function p.on_start(args) tag = args.tag or "none" end
function p.on_flow_start(flow) tap.emit{ message = "start", protocol = flow.protocol } end
function p.on_flow_end(flow)
  tap.emit{ message = "end", from_client = flow.bytes_from_client, from_server = flow.bytes_from_server }
end
function p.on_request(req, flow)
  if req.path == "/deny" then
    return tap.respond{ status = 403, headers = { ["X-Denied-By"] = "lua" }, body = "denied by lua\n" }
  elseif req.path == "/hangup" then
    return tap.close("no answer for you")
  elseif req.path == "/old" then
    req.path = "/echo"
    req.method = "POST"
    req.body = "body from lua"
    req.headers:set("Content-Type", "text/plain")
  end
  req.headers:add("X-Lua-Tag", tag)
  req.headers:remove("X-Secret")
end
function p.on_response(resp, flow)
  if resp.status == 404 then
    resp.status = 200
    resp.body = "patched by lua\n"
    resp.headers:set("X-Patched", "yes")
  elseif resp.status == 500 then
    return tap.respond{ status = 503, headers = { {"Retry-After", "7"} }, body = "replaced\n" }
  elseif resp.status == 418 then
    return tap.close("no teapots")
  end
end
return p
"#;

#[test]
fn forward_proxy_applies_request_and_response_verdicts() {
    if !have("curl") {
        return;
    }
    let dir = temp_dir();
    let plugin = write_plugin(dir.path(), "verdicts.lua", HTTP_PLUGIN);
    let out = dir.path().join("events.jsonl");
    let (_demo, origin) = demo();
    let port = free_port();
    let mut proxy = proxy(
        &[
            "--proxy-address",
            &local(port).to_string(),
            "--plugin",
            plugin.to_str().unwrap(),
            "--plugin-arg",
            "http-verdicts.tag=t1",
            "--plugin",
            repo_root()
                .join("examples/plugins/http_stats.lua")
                .to_str()
                .unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[local(port)],
    );
    let proxy_url = format!("http://{}", local(port));
    let get = |path: &str| curl(&["-i", "-x", &proxy_url, &format!("http://{origin}{path}")]);

    // In-place edits: method, path, body, headers (added, set, removed), order kept.
    let (code, text, _) = curl(&[
        "-i",
        "-x",
        &proxy_url,
        "-H",
        "X-Secret: s3cret",
        "-H",
        "X-First: 1",
        &format!("http://{origin}/old"),
    ]);
    assert_eq!(code, 0, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["body"], "body from lua");
    let headers: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"x-secret"), "{headers:?}");
    assert!(
        headers.contains(&("x-lua-tag".into(), "t1".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("content-length".into(), "13".into())),
        "{headers:?}"
    );
    let first = names.iter().position(|n| *n == "x-first").unwrap();
    let tag = names.iter().position(|n| *n == "x-lua-tag").unwrap();
    assert!(first < tag, "added headers come last: {headers:?}");

    // tap.respond from on_request answers without the upstream.
    let (_, text, _) = get("/deny");
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-denied-by: lua"),
        "{text}"
    );
    assert!(text.ends_with("denied by lua\n"), "{text}");

    // tap.close from on_request: no answer at all.
    let (code, text, _) = get("/hangup");
    assert_ne!(code, 0, "curl should fail: {text}");
    assert!(!text.contains("HTTP/1.1"), "{text}");

    // on_response: edited in place, or replaced by tap.respond.
    let (_, text, _) = get("/status/404");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-patched: yes"),
        "{text}"
    );
    assert!(text.ends_with("patched by lua\n"), "{text}");
    let (_, text, _) = get("/status/500");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 7"),
        "{text}"
    );
    assert!(text.ends_with("replaced\n"), "{text}");
    let (code, text, _) = get("/status/418");
    assert_ne!(code, 0, "tap.close from on_response: no answer: {text}");
    assert!(!text.contains("HTTP/1.1"), "{text}");

    assert_eq!(
        proxy.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let events = json_lines(&out);
    let records: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "record" && e["plugin"] == "http-verdicts")
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["message"] == "start" && r["fields"]["protocol"] == "http"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["message"] == "end" && r["fields"]["from_server"].as_u64() > Some(0)),
        "flow_end carries byte totals: {records:?}"
    );
    // on_stop ran before the outputs were flushed: http_stats saw the responses as the
    // client got them (after http-verdicts, which comes first).
    let summary: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "record" && e["plugin"] == "http-stats")
        .collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(
        summary[0]["fields"]["counts"],
        serde_json::json!({"200": 2, "503": 1}),
        "{summary:?}"
    );
    assert!(
        proxy.stderr().contains("http-verdicts: calls"),
        "end-of-run stats: {}",
        proxy.stderr()
    );
}

const TCP_PLUGIN: &str = r#"
local p = { name = "tcp-verdicts" }
function p.on_data(chunk, flow)
  if chunk.from ~= "client" then return nil end
  local d = chunk.data
  if d:sub(1, 5) == "hold " then
    flow.state.held = (flow.state.held or "") .. d
    return tap.hold()
  elseif d == "close" then
    return tap.close("client said close")
  elseif flow.state.held then
    local held = flow.state.held
    flow.state.held = nil
    return held .. d:upper()
  elseif d == "pass" then
    return nil
  end
  return d:upper()
end
return p
"#;

#[test]
fn tcp_mapping_applies_chunk_verdicts() {
    let dir = temp_dir();
    let plugin = write_plugin(dir.path(), "tcp.lua", TCP_PLUGIN);
    let echo = echo_server();
    let port = free_port();
    let mapping = format!("{port}=tcp://{echo}");
    let mut proxy = proxy(
        &[
            "--disable-http-proxy",
            "--proxy",
            &mapping,
            "--plugin",
            plugin.to_str().unwrap(),
        ],
        &[local(port)],
    );
    let mut s = TcpStream::connect(local(port)).unwrap();
    let pause = Duration::from_millis(300);

    s.write_all(b"pass").unwrap();
    assert_eq!(
        read_for(&mut s, 4, Duration::from_secs(10)).unwrap(),
        b"pass"
    );
    std::thread::sleep(pause);
    s.write_all(b"replace me").unwrap();
    assert_eq!(
        read_for(&mut s, 10, Duration::from_secs(10)).unwrap(),
        b"REPLACE ME"
    );
    std::thread::sleep(pause);
    s.write_all(b"hold this ").unwrap();
    assert_eq!(
        read_for(&mut s, 1, Duration::from_millis(800)).unwrap(),
        b"",
        "held bytes are not forwarded"
    );
    s.write_all(b"then").unwrap();
    assert_eq!(
        read_for(&mut s, 14, Duration::from_secs(10)).unwrap(),
        b"hold this THEN",
        "held bytes are released with the next chunk"
    );
    std::thread::sleep(pause);
    s.write_all(b"close").unwrap();
    let closed = read_for(&mut s, 1, Duration::from_secs(10));
    assert!(
        closed.is_err(),
        "the flow is closed, nothing echoed: {closed:?}"
    );
    // Other connections are unaffected.
    let mut t = TcpStream::connect(local(port)).unwrap();
    t.write_all(b"again").unwrap();
    assert_eq!(
        read_for(&mut t, 5, Duration::from_secs(10)).unwrap(),
        b"AGAIN"
    );
    drop(t);
    assert_eq!(
        proxy.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn lua_and_grpc_stages_run_in_declared_order_seeing_each_others_changes() {
    let Some(stubs) = grpc_stubs() else { return };
    if !have("curl") {
        return;
    }
    let dir = temp_dir();
    let before = write_plugin(
        dir.path(),
        "before.lua",
        r#"
return { name = "before", on_request = function(req) req.headers:add("X-Lua-Before", "1") end }
"#,
    );
    let after = write_plugin(
        dir.path(),
        "after.lua",
        r#"
local p = { name = "after" }
function p.on_request(req)
  req.headers:add("X-Lua-After-Saw", (req.headers:get("X-Rewritten") or "-") .. " " .. req.path)
end
function p.on_response(resp)
  resp.headers:add("X-Lua-Saw-Plugin", resp.headers:get("X-Plugin-Saw") or "-")
end
return p
"#,
    );
    let grpc_port = free_port();
    let _grpc = grpc_plugin(&stubs, "rewrite_plugin.py", grpc_port, &[]);
    let (_demo, origin) = demo();
    let port = free_port();
    let grpc_url = format!("http://127.0.0.1:{grpc_port}");
    let mut proxy = proxy(
        &[
            "--proxy-address",
            &local(port).to_string(),
            "--plugin",
            before.to_str().unwrap(),
            "--grpc-plugin",
            &grpc_url,
            "--plugin",
            after.to_str().unwrap(),
        ],
        &[local(port)],
    );
    let (code, text, _) = curl(&[
        "-i",
        "-x",
        &format!("http://{}", local(port)),
        &format!("http://{origin}/anything"),
    ]);
    assert_eq!(code, 0, "{text}");
    let lower = text.to_ascii_lowercase();
    // The response passes gRPC (adds X-Plugin-Saw) and then the after plugin, which sees it.
    assert!(lower.contains("x-lua-saw-plugin: 200"), "{text}");
    let body = text.split("\r\n\r\n").last().unwrap();
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    assert!(
        headers.contains(&("x-lua-before".into(), "1".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("x-rewritten".into(), "yes".into())),
        "{headers:?}"
    );
    let saw = headers
        .iter()
        .find(|(n, _)| n == "x-lua-after-saw")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    assert!(
        saw.starts_with("yes /echo?rewritten=yes"),
        "the Lua stage after the gRPC one sees its rewrite: {headers:?}"
    );
    proxy.stop(Duration::from_secs(20));
}

#[test]
fn a_plugin_that_always_raises_leaves_traffic_intact_and_is_counted() {
    if !have("curl") {
        return;
    }
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "raiser.lua",
        r#"
local p = { name = "raiser" }
function p.on_request(req) req.path = "/broken"; error("request hook exploded") end
function p.on_response(resp) resp.status = 599; error("response hook exploded") end
function p.on_flow_start(flow) error("flow hook exploded") end
return p
"#,
    );
    let (_demo, origin) = demo();
    let port = free_port();
    let mut proxy = proxy(
        &[
            "--proxy-address",
            &local(port).to_string(),
            "--plugin",
            plugin.to_str().unwrap(),
        ],
        &[local(port)],
    );
    for _ in 0..3 {
        let (status, body) = http_get_via(local(port), &format!("http://{origin}/bytes/1000"));
        assert_eq!(status, 200);
        assert_eq!(body.len(), 1000);
    }
    assert_eq!(proxy.stop(Duration::from_secs(20)), Some(0));
    let stderr = proxy.stderr();
    assert!(
        stderr.contains("lua plugin raiser: on_request:")
            && stderr.contains("raiser.lua:3: request hook exploded"),
        "logged with plugin name and file:line: {stderr}"
    );
    let stats = stderr
        .lines()
        .find(|l| l.contains("raiser: calls"))
        .unwrap_or_else(|| panic!("no stats line: {stderr}"));
    let errors: u64 = stats
        .split("errors ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(
        errors >= 6,
        "3 requests + 3 responses failed at least: {stats}"
    );
}

#[test]
fn an_endless_hook_is_interrupted_and_traffic_continues() {
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "spin.lua",
        "local p = { name = \"spinner\" }\nfunction p.on_request(req)\n  while true do end\nend\nreturn p\n",
    );
    let (_demo, origin) = demo();
    let port = free_port();
    let mut proxy = proxy(
        &[
            "--proxy-address",
            &local(port).to_string(),
            "--hook-budget",
            "100ms",
            "--plugin",
            plugin.to_str().unwrap(),
        ],
        &[local(port)],
    );
    let (status, body) = http_get_via(local(port), &format!("http://{origin}/bytes/10"));
    assert_eq!((status, body.len()), (200, 10));
    assert_eq!(proxy.stop(Duration::from_secs(20)), Some(0));
    let stderr = proxy.stderr();
    assert!(stderr.contains("spin.lua:3: interrupted"), "{stderr}");
    assert!(stderr.contains("errors 1, timeouts 1,"), "{stderr}");
}

#[test]
fn riff_modules_see_proxied_chunks() {
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "riff_filter.lua",
        r#"
local filter_plugin = {}
local src = { args = "filter args" }
local sink = { name = "filter_plugin", ver = "0.1" }
function filter_plugin.push(self, stream)
    for k, v in pairs(stream.metadata) do self.source[k] = v end
end
function filter_plugin.init(self) self.source = src; self.sink = sink end
function filter_plugin.action(self, stream)
    -- riff's marker line (\035 is '#', so the Rust raw string stays simple)
    if string.find(stream.data, "pcap") then print("\035##########[ OK ]#############") end
end
function filter_plugin.match(self, param)
    for kn, kv in pairs(self.source) do self.sink[kn] = kv end
    self.sink['metadata'] = { data = self.source['data'] }
    self:action(self.sink)
    return self.source, self.sink
end
return filter_plugin
"#,
    );
    let (_demo, origin) = demo();
    let port = free_port();
    let mut proxy = proxy(
        &[
            "--proxy-address",
            &local(port).to_string(),
            "--plugin",
            plugin.to_str().unwrap(),
            "--quiet",
        ],
        &[local(port)],
    );
    // A CONNECT tunnel carries raw chunks (the forward proxy parses HTTP itself).
    let mut s = connect_tunnel(local(port), origin);
    write!(
        s,
        "GET /echo HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: pcap testcase\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let _ = read_for(&mut s, usize::MAX, Duration::from_secs(1));
    proxy.wait_output("[ OK ]", Duration::from_secs(10));
    proxy.stop(Duration::from_secs(20));
}

#[test]
fn load_errors_exit_2_naming_file_and_line() {
    let dir = temp_dir();
    let bad = write_plugin(
        dir.path(),
        "broken.lua",
        "local p = {}\nfunction p.on_data(\nreturn p\n",
    );
    let (code, _, stderr) = run_tapline(&[
        "proxy",
        "--proxy-address",
        &local(free_port()).to_string(),
        "--plugin",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.lua:3:"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let (code, _, stderr) = run_tapline(&[
        "proxy",
        "--plugin",
        bad.to_str().unwrap(),
        "--plugin-arg",
        "nodots",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("NAME.key=value"), "{stderr}");
}

#[test]
fn sql_examples_through_a_psql_mapping() {
    let Some(pg) = Postgres::start() else { return };
    let dir = temp_dir();
    let out = dir.path().join("events.jsonl");
    let listen = local(free_port());
    let mapping = format!("{}=psql://{}", listen.port(), pg.addr);
    let root = repo_root().join("examples/plugins");
    let mut proxy = proxy(
        &[
            "--disable-http-proxy",
            "--proxy",
            &mapping,
            "--plugin",
            root.join("sql_log.lua").to_str().unwrap(),
            "--plugin",
            root.join("slow_queries.lua").to_str().unwrap(),
            "--plugin-arg",
            "slow-queries.ms=150",
            "--output",
            out.to_str().unwrap(),
        ],
        &[listen],
    );
    let (code, stdout, stderr) = Postgres::psql(
        listen,
        "SELECT 40 + 2 AS answer; SELECT pg_sleep(0.3); SELECT * FROM no_such_table;",
    );
    assert!(stdout.contains("42"), "{stdout}{stderr}");
    assert!(stderr.contains("no_such_table"), "{code} {stderr}");
    assert_eq!(
        proxy.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let events = json_lines(&out);
    let records: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "record" && e["plugin"] == "sql-log")
        .collect();
    let outcomes: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["fields"]["outcome"].as_str().unwrap(),
                r["fields"]["tag"]
                    .as_str()
                    .or(r["fields"]["code"].as_str())
                    .unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("ok", "SELECT 1"), ("ok", "SELECT 1"), ("error", "42P01")],
        "{records:#?}"
    );
    let sleep_ms = records[1]["fields"]["latency_ms"].as_f64().unwrap();
    assert!(
        sleep_ms >= 250.0,
        "the pg_sleep statement took its time: {sleep_ms}"
    );
    let slow: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["plugin"] == "slow-queries")
        .collect();
    assert!(
        !slow.is_empty(),
        "pg_sleep(0.3) is slower than 150 ms: {slow:#?}"
    );
    assert!(slow
        .iter()
        .all(|a| a["fields"]["latency_ms"].as_f64() > Some(150.0)));
}

#[test]
fn a_plugin_that_reads_only_requests_does_not_hold_responses_back() {
    // The origin sends its head and a first chunk, then waits before ending the body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let tagged = read_head(&mut s)
            .to_ascii_lowercase()
            .contains("x-lua-tag: early");
        let first = if tagged {
            "5\r\nfirst\r\n"
        } else {
            "8\r\nuntagged\r\n"
        };
        s.write_all(
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{first}").as_bytes(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let _ = s.write_all(b"4\r\nlast\r\n0\r\n\r\n");
    });
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "requests_only.lua",
        r#"
local p = { name = "requests-only" }
function p.on_request(req) req.headers:add("X-Lua-Tag", "early") end
return p
"#,
    );
    let (mut p, proxy) = start_proxy(&["--plugin", plugin.to_str().unwrap()]);
    let mut s = TcpStream::connect(proxy).unwrap();
    s.write_all(format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .unwrap();
    // The first chunk arrives while the origin still holds the rest.
    let got = read_for(&mut s, usize::MAX, Duration::from_millis(1500)).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("5\r\nfirst\r\n"), "{text:?}");
    assert!(!text.contains("last"), "{text:?}");
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}
