//! HAR 1.2 (the HTTP Archive that browsers' devtools read and write, and `tapline replay`
//! reads back) from HTTP transactions: request and response heads in wire order, bodies as
//! text or base64, the latency as the wait timing. [`HarSink`] is the `--har FILE` output;
//! [`log`] makes a whole log at once (the web view's download).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tapline_core::{Event, EventKind, EventSink, Kind, Transaction};

use crate::json::detailed;

/// A HAR log with one entry per HTTP transaction among `rows` (objects made by
/// [`detailed`]; other rows are skipped).
pub fn log(rows: &[Value]) -> Value {
    let entries: Vec<Value> = rows.iter().filter_map(entry).collect();
    let mut log = head();
    log["log"]["entries"] = Value::Array(entries);
    log
}

/// A log without entries.
fn head() -> Value {
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "tapline", "version": env!("CARGO_PKG_VERSION") },
            "pages": [],
            "entries": [],
        }
    })
}

/// Writes every HTTP transaction of the run to a HAR file as it happens: the log's head at
/// once, one entry per transaction, and the closing brackets at a clean stop (the file is
/// valid HAR from then on).
pub struct HarSink {
    out: Mutex<HarFile>,
}

struct HarFile {
    file: BufWriter<File>,
    entries: u64,
    failed: bool,
    closed: bool,
}

impl HarSink {
    /// Creates (or truncates) `path` and writes the log's head.
    pub fn create(path: &Path) -> io::Result<HarSink> {
        let mut file = BufWriter::new(File::create(path)?);
        // The log's fields with the entries last, open for them.
        let creator = &head()["log"]["creator"];
        write!(
            file,
            "{{\"log\":{{\"version\":\"1.2\",\"creator\":{creator},\"pages\":[],\"entries\":["
        )?;
        Ok(HarSink {
            out: Mutex::new(HarFile {
                file,
                entries: 0,
                failed: false,
                closed: false,
            }),
        })
    }
}

impl EventSink for HarSink {
    fn emit(&self, event: &Event) {
        if !matches!(event.kind, EventKind::Transaction(Transaction::Http { .. })) {
            return;
        }
        let Some(entry) = entry(&detailed(event, usize::MAX)) else {
            return;
        };
        let mut out = self.out.lock();
        if out.failed || out.closed {
            return;
        }
        let comma = if out.entries == 0 { "" } else { "," };
        let result = write!(out.file, "{comma}\n{entry}");
        out.entries += 1;
        if let Err(e) = result {
            out.failed = true;
            tracing::error!("--har: cannot write: {e}; no more entries");
        }
    }

    fn wants_details(&self, kind: Kind) -> bool {
        kind == Kind::Transaction
    }

    fn wants_bodies(&self) -> bool {
        true
    }

    fn flush(&self) {
        let mut out = self.out.lock();
        if out.closed || out.failed {
            return;
        }
        out.closed = true;
        if let Err(e) = out
            .file
            .write_all(b"\n]}}\n")
            .and_then(|()| out.file.flush())
        {
            tracing::error!("--har: cannot write: {e}");
        }
    }
}

/// One HAR entry, if `row` is an HTTP transaction.
fn entry(row: &Value) -> Option<Value> {
    if row["kind"] != "transaction" || row["protocol"] == "postgres" {
        return None;
    }
    let (request, response) = (&row["request"], &row["response"]);
    let method = request["method"].as_str()?;
    let latency = row["latency_ms"].as_f64().unwrap_or(0.0);
    let url = absolute_url(row);
    let request_headers = headers(&row["request_headers"]);
    let response_headers = headers(&row["response_headers"]);
    let mut har_request = json!({
        "method": method,
        "url": url,
        "httpVersion": request["version"],
        "cookies": [],
        "headers": request_headers,
        "queryString": query_string(&url),
        "headersSize": -1,
        "bodySize": request["body_len"],
    });
    if let Some(body) = row.get("request_body") {
        har_request["postData"] = json!({
            "mimeType": header(&row["request_headers"], "content-type").unwrap_or_default(),
            "text": body_text(body),
        });
    }
    let mut content = json!({
        "size": response["body_len"],
        "mimeType": header(&row["response_headers"], "content-type").unwrap_or_default(),
    });
    if let Some(body) = row.get("response_body") {
        content["text"] = json!(body_text(body));
        if body.get("base64").is_some() {
            content["encoding"] = json!("base64");
        }
    }
    let mut entry = json!({
        "startedDateTime": row.get("request_ts").unwrap_or(&row["ts"]),
        "time": latency,
        "request": har_request,
        "response": {
            "status": response["status"],
            "statusText": response["reason"],
            "httpVersion": response["version"],
            "cookies": [],
            "headers": response_headers,
            "content": content,
            "redirectURL": header(&row["response_headers"], "location").unwrap_or_default(),
            "headersSize": -1,
            "bodySize": response["body_len"],
        },
        "cache": {},
        "timings": { "send": 0, "wait": latency, "receive": 0 },
    });
    let server = row["server"].as_str().and_then(|s| s.rsplit_once(':'));
    if let Some((ip, _)) = server {
        entry["serverIPAddress"] = json!(ip.trim_matches(['[', ']']));
    }
    if let Some(flow) = row["flow"].as_str() {
        entry["connection"] = json!(flow);
    }
    Some(entry)
}

/// The request's absolute URL: as captured, else rebuilt from the scheme, `Host` and path.
fn absolute_url(row: &Value) -> String {
    if let Some(url) = row["request"]["url"].as_str() {
        return url.to_string();
    }
    let path = row["request"]["path"].as_str().unwrap_or("/");
    let host = header(&row["request_headers"], "host")
        .or_else(|| row["server"].as_str().map(String::from))
        .unwrap_or_default();
    let scheme = if row.get("tls").is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}{path}")
}

/// `[[name, value], …]` as HAR's `[{name, value}, …]`.
fn headers(pairs: &Value) -> Vec<Value> {
    pairs
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| json!({ "name": p[0], "value": p[1] }))
                .collect()
        })
        .unwrap_or_default()
}

/// The first field called `name` (any case).
fn header(pairs: &Value, name: &str) -> Option<String> {
    pairs.as_array()?.iter().find_map(|p| {
        let n = p[0].as_str()?;
        n.eq_ignore_ascii_case(name)
            .then(|| p[1].as_str().map(String::from))
            .flatten()
    })
}

fn query_string(url: &str) -> Vec<Value> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    crate::query::query_pairs(query)
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect()
}

fn body_text(body: &Value) -> String {
    body["text"]
        .as_str()
        .or_else(|| body["base64"].as_str())
        .unwrap_or_default()
        .to_string()
}
