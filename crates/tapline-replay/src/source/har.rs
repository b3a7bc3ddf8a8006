//! A HAR 1.2 file as a source: `log.entries[]`, each a request (method, url, headers,
//! `postData.text`) with the status and body size of its response. Entries that name the
//! same `connection` share a replay connection; the others get one each. HTTP/2 pseudo-header
//! fields (`:authority`, …) are left out, and a `Host` field is made from the URL when the
//! entry has none.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tapline_core::{Headers, HttpRequest, Timestamp};
use tokio::sync::mpsc;

use super::jsonl::origin_form;
use super::{body_from, input_error, SourceError};
use crate::feed::{Feed, HttpOutcome};

/// A parsed HAR file.
pub struct HarSource {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Har {
    log: Log,
}

#[derive(Deserialize)]
struct Log {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    started_date_time: Option<String>,
    time: Option<f64>,
    connection: Option<String>,
    request: Request,
    response: Option<Response>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    method: String,
    url: String,
    http_version: Option<String>,
    #[serde(default)]
    headers: Vec<Field>,
    post_data: Option<PostData>,
}

#[derive(Deserialize)]
struct Field {
    name: String,
    value: String,
}

#[derive(Deserialize)]
struct PostData {
    text: Option<String>,
    encoding: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    status: u16,
    body_size: Option<i64>,
    content: Option<Content>,
}

#[derive(Deserialize)]
struct Content {
    size: Option<i64>,
}

impl HarSource {
    /// Reads and parses the file (a HAR is one JSON document).
    pub fn open(path: &Path) -> Result<HarSource, SourceError> {
        let file = std::fs::File::open(path).map_err(|e| input_error(path, e))?;
        let har: Har = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| input_error(path, format!("not a HAR 1.2 file: {e}")))?;
        Ok(HarSource {
            entries: har.log.entries,
        })
    }

    /// Sends every entry's request and response as feeds, each connection ended after its
    /// last entry.
    pub fn read(self, tx: &mpsc::Sender<Feed>) -> Result<(), SourceError> {
        let mut named: HashMap<String, u64> = HashMap::new();
        let mut last_of: HashMap<u64, usize> = HashMap::new();
        let count = self.entries.len() as u64;
        let conns: Vec<u64> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| match &e.connection {
                Some(c) => {
                    let next = count + named.len() as u64;
                    *named.entry(c.clone()).or_insert(next)
                }
                None => i as u64,
            })
            .collect();
        for (i, conn) in conns.iter().enumerate() {
            last_of.insert(*conn, i);
        }
        for (i, (entry, conn)) in self.entries.into_iter().zip(conns).enumerate() {
            let mut feeds = vec![Feed::HttpRequest {
                conn,
                ts: entry
                    .started_date_time
                    .as_deref()
                    .and_then(Timestamp::parse_rfc3339)
                    .unwrap_or_default(),
                request: Box::new(request(entry.request)),
            }];
            if let Some(r) = entry.response.filter(|r| r.status > 0) {
                let size = r.body_size.filter(|s| *s >= 0);
                let size = size.or(r.content.and_then(|c| c.size).filter(|s| *s >= 0));
                feeds.push(Feed::HttpResponse {
                    conn,
                    outcome: HttpOutcome {
                        status: r.status,
                        body_len: size.unwrap_or(0) as u64,
                        latency: entry
                            .time
                            .filter(|t| t.is_finite() && *t >= 0.0)
                            .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
                    },
                });
            }
            if last_of.get(&conn) == Some(&i) {
                feeds.push(Feed::End { conn });
            }
            for feed in feeds {
                if tx.blocking_send(feed).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The request an entry describes.
fn request(r: Request) -> HttpRequest {
    let mut headers: Headers = r
        .headers
        .into_iter()
        .filter(|f| !f.name.starts_with(':'))
        .map(|f| (f.name, f.value))
        .collect();
    if headers.get("host").is_none() {
        let authority = r
            .url
            .split_once("://")
            .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        if !authority.is_empty() {
            headers.0.insert(0, ("Host".into(), authority.into()));
        }
    }
    let body = match &r.post_data {
        Some(p) if p.encoding.as_deref() == Some("base64") => body_from(None, p.text.as_deref()),
        Some(p) => body_from(p.text.as_deref(), None),
        None => Default::default(),
    };
    let version = match r.http_version.as_deref() {
        Some(v) if v.eq_ignore_ascii_case("HTTP/1.0") => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    HttpRequest {
        method: r.method,
        path: origin_form(&r.url),
        url: Some(r.url),
        version: version.to_string(),
        headers,
        body_len: body.len() as u64,
        body,
        body_truncated: false,
    }
}
