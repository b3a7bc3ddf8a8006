//! tapline's JSON lines (`--json`, `--output`) as a source: `http_request` events (method,
//! `path` or `url`, `headers` as `[name, value]` pairs, and a body when the line carries one
//! as `body` with `--json-bodies`: `{"text": …}` or `{"base64": …}`), the `http_response` events that answer them, and `flow_end`.
//! Connections are the events' `flow` ids. Read line by line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tapline_core::{Headers, HttpRequest, Timestamp};
use tokio::sync::mpsc;

use super::{body_from, input_error, SourceError};
use crate::feed::{Feed, HttpOutcome};

/// An opened JSON-lines file.
pub struct JsonlSource {
    path: PathBuf,
    reader: BufReader<File>,
}

impl JsonlSource {
    /// Opens the file.
    pub fn open(path: &Path) -> Result<JsonlSource, SourceError> {
        let file = File::open(path).map_err(|e| input_error(path, e))?;
        Ok(JsonlSource {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
        })
    }

    /// Reads every line, sending the feeds; a line that is not a JSON object is an error.
    pub fn read(self, tx: &mpsc::Sender<Feed>) -> Result<(), SourceError> {
        for (n, line) in self.reader.lines().enumerate() {
            let line = line.map_err(|e| input_error(&self.path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line)
                .map_err(|e| input_error(&self.path, format!("line {}: not JSON ({e})", n + 1)))?;
            let Some(feed) = feed(&value) else {
                continue;
            };
            if tx.blocking_send(feed).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// The feed one event line makes, if any.
fn feed(v: &Value) -> Option<Feed> {
    let conn = match &v["flow"] {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => 0,
    };
    let ts = v["ts"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or_default();
    match v["kind"].as_str()? {
        "http_request" => Some(Feed::HttpRequest {
            conn,
            ts,
            request: Box::new(request(v)?),
        }),
        "http_response" => Some(Feed::HttpResponse {
            conn,
            outcome: HttpOutcome {
                status: u16::try_from(v["status"].as_u64()?).ok()?,
                body_len: v["body_len"].as_u64().unwrap_or(0),
                latency: v["latency_ms"]
                    .as_f64()
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
            },
        }),
        "flow_end" => Some(Feed::End { conn }),
        _ => None,
    }
}

/// The request an `http_request` line describes.
fn request(v: &Value) -> Option<HttpRequest> {
    let url = v["url"].as_str().map(String::from);
    let path = match v["path"].as_str() {
        Some(p) => p.to_string(),
        None => origin_form(url.as_deref()?),
    };
    let headers: Headers = v["headers"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?, p.get(1)?.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    // `--json-bodies` writes {"text": …} or {"base64": …}.
    let body = body_from(v["body"]["text"].as_str(), v["body"]["base64"].as_str());
    Some(HttpRequest {
        method: v["method"].as_str()?.to_string(),
        path,
        url,
        version: v["version"].as_str().unwrap_or("HTTP/1.1").to_string(),
        headers,
        body_len: body.len() as u64,
        body,
        body_truncated: false,
    })
}

/// The origin form (`/path?query`) of an absolute URL.
pub(super) fn origin_form(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_become_requests() {
        let v: Value = serde_json::from_str(
            r#"{"kind":"http_request","ts":"2026-01-01T00:00:00.000001Z","flow":"3",
                "method":"POST","path":"/echo","url":"http://h/echo","version":"HTTP/1.1",
                "headers":[["Host","h"],["X-A","1"]],"body":{"text":"hi","truncated":false},"body_len":2}"#,
        )
        .unwrap();
        let Some(Feed::HttpRequest { conn, ts, request }) = feed(&v) else {
            panic!("a request");
        };
        assert_eq!(
            (conn, ts),
            (3, Timestamp::from_secs_micros(1_767_225_600, 1))
        );
        assert_eq!(request.headers.get("x-a"), Some("1"));
        assert_eq!(&request.body[..], b"hi");
        assert_eq!(origin_form("https://h:8/a?b=1"), "/a?b=1");
        assert_eq!(origin_form("http://h"), "/");
    }
}
