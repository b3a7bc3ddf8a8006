//! The HTTP forward proxy end to end: curl and raw clients through `tapline proxy` to real
//! origins on loopback (the demo origin, and origins written here).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{
    curl, curl_env, demo, free_port, have, http_get_via, json_lines, local, proxy, sha256_hex,
    start_proxy, temp_dir,
};

#[test]
fn curl_reaches_the_demo_origin_through_the_forward_proxy() {
    if !have("curl") {
        return;
    }
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let (mut p, listen) = start_proxy(&["--output", events.to_str().unwrap()]);
    p.wait_output(&format!("HTTP proxy on {listen}"), Duration::from_secs(5));
    let via = format!("http://{listen}");

    let (code, body, err) = curl(&["-x", &via, &format!("http://{origin}/")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "Hello from the tapline demo origin.\n");

    // A name works as well as an address (whatever localhost resolves to here).
    let by_name = format!("http://localhost:{}/status/202", origin.port());
    let (code, body, err) = curl(&["-x", &via, &by_name]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "202 Accepted\n");

    // A POST body arrives; hop-by-hop fields do not.
    let (code, body, err) = curl(&[
        "-x",
        &via,
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: secret",
        "-H",
        "X-End: kept",
        "--data-binary",
        "hello through tapline",
        &format!("http://{origin}/echo?q=1"),
    ]);
    assert_eq!(code, 0, "{err}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo is JSON");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo?q=1");
    assert_eq!(echo["body"], "hello through tapline");
    let names: Vec<String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(names.contains(&"x-end".to_string()), "{names:?}");
    assert!(!names.contains(&"x-hop".to_string()), "{names:?}");
    assert!(
        !names.contains(&"proxy-connection".to_string()),
        "{names:?}"
    );

    // Keep-alive to the proxy: curl reuses its connection for a second URL.
    let (code, body, err) = curl(&[
        "-v",
        "-x",
        &via,
        &format!("http://{origin}/status/201"),
        &format!("http://{origin}/bytes/10"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "201 Created\n0123456789");
    assert!(err.contains("Re-using existing connection"), "{err}");

    // http_proxy in the environment just works, for fixed-length and chunked bodies.
    let env = [("http_proxy", via.clone())];
    let (code, body, err) = curl_env(&[&format!("http://{origin}/bytes/300000")], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 300_000);
    let (code, body, err) = curl_env(&[&format!("http://{origin}/chunked/250000")], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 250_000);

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let kinds = |k: &'static str| events.iter().filter(move |e| e["kind"] == k);
    let post = kinds("http_request")
        .find(|e| e["method"] == "POST")
        .expect("the POST is reported");
    assert_eq!(post["path"], "/echo?q=1");
    assert_eq!(post["url"], format!("http://{origin}/echo?q=1"));
    assert_eq!(post["body_len"], 21);
    assert_eq!(post["route"], "forward");
    assert_eq!(post["protocol"], "http");
    assert_eq!(post["server"], origin.to_string());
    let big = kinds("http_response")
        .find(|e| e["path"] == "/bytes/300000")
        .expect("the download is reported");
    assert_eq!(big["status"], 200);
    assert_eq!(big["body_len"], 300_000);
    assert!(big["latency_ms"].as_f64().is_some(), "{big}");
    let chunked = kinds("http_response")
        .find(|e| e["path"] == "/chunked/250000")
        .unwrap();
    assert_eq!(chunked["body_len"], 250_000);
    assert_eq!(kinds("transaction").count(), 7, "{events:?}");
    let starts = kinds("flow_start").count();
    let ends: Vec<_> = kinds("flow_end").collect();
    assert_eq!(starts, ends.len());
    assert!(ends.iter().all(|e| e["end"] == "fin"), "{ends:?}");
    let from_server: u64 = ends
        .iter()
        .map(|e| e["bytes_from_server"].as_u64().unwrap())
        .sum();
    assert!(from_server > 550_000, "{ends:?}");
}

#[test]
fn unreachable_slow_and_self_upstreams_get_gateway_errors() {
    let (mut p, listen) = start_proxy(&["--idle-timeout", "1s", "--max-header-size", "4096"]);

    // Nothing listens there: 502.
    let dead = free_port();
    let (status, body) = http_get_via(listen, &format!("http://127.0.0.1:{dead}/x"));
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).starts_with("tapline: "));

    // An upstream that accepts and never answers: 504 after the idle timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().take(4) {
            held.push(conn);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let (status, body) = http_get_via(listen, &format!("http://{silent_addr}/slow"));
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));

    // The proxy itself as the target: refused, not looped.
    let (status, _) = http_get_via(listen, &format!("http://{listen}/"));
    assert_eq!(status, 508);

    // Origin-form requests are not for a forward proxy.
    assert_eq!(raw_status(listen, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);

    // Heads over --max-header-size are refused.
    let big = format!(
        "GET http://{silent_addr}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8000)
    );
    assert_eq!(raw_status(listen, &big), 431);

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

/// Sends `request` as is and returns the response's status code.
fn raw_status(proxy: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

const CLIENTS: usize = 200;
const BODY: usize = 1 << 20;

/// `len` bytes that differ per `seed` (xorshift), so a mixed-up body cannot match.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An origin answering every request with the SHA-256 hex of its body.
async fn hashing_origin(listener: tokio::net::TcpListener) {
    use http_body_util::{BodyExt, Full};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(bytes::Bytes::from(
                        sha256_hex(&body),
                    ))))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One client: a 1 MiB POST (chunked for odd ids) in absolute form, then the origin's hash.
async fn upload(proxy: SocketAddr, origin: SocketAddr, id: usize) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = payload(id as u64 + 1, BODY);
    let mut s = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| e.to_string())?;
    let framing = if id.is_multiple_of(2) {
        format!("Content-Length: {BODY}")
    } else {
        "Transfer-Encoding: chunked".to_string()
    };
    let head = format!(
        "POST http://{origin}/upload/{id} HTTP/1.1\r\nHost: {origin}\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if id.is_multiple_of(2) {
        s.write_all(&body).await.map_err(|e| e.to_string())?;
    } else {
        for part in body.chunks(64 * 1024 + id) {
            s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(part).await.map_err(|e| e.to_string())?;
            s.write_all(b"\r\n").await.map_err(|e| e.to_string())?;
        }
        s.write_all(b"0\r\n\r\n").await.map_err(|e| e.to_string())?;
    }
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let (head, hash) = text.split_once("\r\n\r\n").ok_or("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("client {id}: {head}"));
    }
    if hash != sha256_hex(&body) {
        return Err(format!("client {id}: body arrived changed"));
    }
    Ok(())
}

#[test]
fn concurrent_large_request_bodies_arrive_byte_identical() {
    let listen = local(free_port());
    let mut p = proxy(
        &["--proxy-address", &listen.to_string(), "--quiet"],
        &[listen],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failures: Vec<String> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        tokio::spawn(hashing_origin(listener));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| tokio::spawn(upload(listen, origin, id)))
            .collect();
        let all = async {
            let mut failures = Vec::new();
            for c in clients {
                if let Err(e) = c.await.unwrap() {
                    failures.push(e);
                }
            }
            failures
        };
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("200 uploads finish within 2 minutes")
    });
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}

/// A Lua plugin that reads request bodies, and replaces one.
const BODY_PLUGIN: &str = r#"
local p = { name = "body-reader" }
function p.on_request(req)
    if req.path == "/echo?replace" then
        req.body = "short"
    end
end
return p
"#;

#[test]
fn bodies_past_the_limit_stream_on_truncated_and_replacements_are_reframed() {
    if !have("curl") {
        return;
    }
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let plugin = dir.path().join("body.lua");
    std::fs::write(&plugin, BODY_PLUGIN).unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![b'x'; 100_000]).unwrap();
    let events = dir.path().join("events.jsonl");
    let (mut p, listen) = start_proxy(&[
        "--body-limit",
        "1KiB",
        "--plugin",
        plugin.to_str().unwrap(),
        "--output",
        events.to_str().unwrap(),
    ]);
    let via = format!("http://{listen}");
    let data = format!("@{}", upload.display());
    for (query, expected_len) in [("", 100_000), ("?replace", 5)] {
        let (code, body, err) = curl(&[
            "-x",
            &via,
            "-H",
            "Expect:",
            "--data-binary",
            &data,
            &format!("http://{origin}/echo{query}"),
        ]);
        assert_eq!(code, 0, "{err}");
        let echo: serde_json::Value = serde_json::from_str(&body).expect("echo is JSON");
        assert_eq!(echo["body_len"], expected_len, "{query}");
    }

    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let events = json_lines(&events);
    let requests: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "http_request")
        .collect();
    assert_eq!(requests.len(), 2, "{events:?}");
    assert_eq!(requests[0]["body_truncated"], true);
    assert_eq!(requests[0]["body_len"], 100_000);
    assert_eq!(requests[1]["body_truncated"], false);
    assert_eq!(requests[1]["body_len"], 5);
}

/// A Lua plugin that answers for a host that does not exist.
const MOCK_PLUGIN: &str = r#"
local p = { name = "mock-api" }
function p.on_request(req)
    if req.url and req.url:find("api.mock.invalid", 1, true) then
        return tap.respond{ status = 200, headers = { ["Content-Type"] = "text/plain" }, body = "mocked\n" }
    end
end
return p
"#;

#[test]
fn a_plugin_answers_for_a_name_that_does_not_resolve() {
    if !have("curl") {
        return;
    }
    let dir = temp_dir();
    let plugin = dir.path().join("mock.lua");
    std::fs::write(&plugin, MOCK_PLUGIN).unwrap();
    let (mut p, listen) = start_proxy(&["--plugin", plugin.to_str().unwrap()]);
    let via = format!("http://{listen}");
    let (code, body, err) = curl(&["-x", &via, "http://api.mock.invalid/users/1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "mocked\n");
    // Without the plugin's answer, a name that does not resolve is a 502.
    let (code, body, err) = curl(&[
        "-x",
        &via,
        "-w",
        "%{http_code}",
        "http://other.mock.invalid/",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(body.ends_with("502"), "{body}");
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
}
