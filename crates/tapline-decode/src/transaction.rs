//! Pairing requests with their answers: HTTP requests with responses, PostgreSQL statements
//! (simple `Query`, or `Parse`+`Bind`+`Execute`) with `CommandComplete`/`ErrorResponse`.
//!
//! Both trackers are bounded: a peer that never answers cannot make them grow without limit.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use tapline_core::{HttpRequest, HttpResponse, Injected, PgTransaction, Timestamp, Transaction};

/// Most requests (or statements) kept waiting for an answer; older ones are forgotten.
/// With heads of at most 64 KiB, a flow's pending HTTP requests stay under 4 MiB.
const MAX_PENDING: usize = 64;
/// Most named prepared statements and portals remembered per connection.
const MAX_NAMED: usize = 128;
/// Longest statement text kept in a transaction.
const MAX_SQL: usize = 16 * 1024;
/// Most bound parameters kept per statement (each already cut to `pgsql::MAX_VALUE`).
const MAX_PARAMS: usize = 32;

/// An HTTP request waiting for its response.
#[derive(Debug)]
pub(crate) struct PendingRequest {
    /// The request's head (its body was in the `http_request` event).
    pub request: HttpRequest,
    /// When its head was seen.
    pub head_ts: Timestamp,
    /// When its last byte was seen, once it was.
    pub end_ts: Option<Timestamp>,
}

/// Requests in the order sent, waiting for responses in the same order (HTTP/1.x pipelining).
#[derive(Debug)]
pub(crate) struct HttpPairing {
    pending: VecDeque<PendingRequest>,
    /// Whether transactions carry copies of the request and response heads; without, only
    /// the request line and the status (no one reads more: see `DecodeConfig`).
    heads: bool,
}

impl Default for HttpPairing {
    fn default() -> Self {
        Self::new(true)
    }
}

impl HttpPairing {
    /// A pairing whose transactions carry full heads only when `heads`.
    pub fn new(heads: bool) -> Self {
        HttpPairing {
            pending: VecDeque::new(),
            heads,
        }
    }

    /// A request head was seen at `ts` (kept whole, or only its line without `heads`).
    pub fn push(&mut self, request: &HttpRequest, ts: Timestamp) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        let request = if self.heads {
            request.clone()
        } else {
            request.line_only()
        };
        self.pending.push_back(PendingRequest {
            request,
            head_ts: ts,
            end_ts: None,
        });
    }

    /// The newest request was read completely at `ts`, with this body (as kept, up to the
    /// body limit: carried by the transaction when it keeps heads) and body size.
    pub fn request_done(&mut self, ts: Timestamp, body: &Bytes, body_len: u64, truncated: bool) {
        if let Some(p) = self.pending.back_mut() {
            if p.end_ts.is_none() {
                p.end_ts = Some(ts);
                p.request.body_len = body_len;
                p.request.body_truncated = truncated;
                if self.heads {
                    p.request.body = body.clone();
                }
            }
        }
    }

    /// The request the next response answers.
    pub fn front(&self) -> Option<&PendingRequest> {
        self.pending.front()
    }

    /// The final response to the oldest request is complete: the transaction, when the
    /// request is known. `latency` is the one already computed for the response head.
    pub fn answer(&mut self, response: &HttpResponse) -> Option<Transaction> {
        let pending = self.pending.pop_front()?;
        if self.pending.is_empty() {
            // An idle keep-alive connection keeps no room for pending requests.
            self.pending = VecDeque::new();
        }
        let head = if self.heads {
            HttpResponse {
                status: response.status,
                reason: response.reason.clone(),
                version: response.version.clone(),
                headers: response.headers.clone(),
                body: response.body.clone(),
                body_truncated: response.body_truncated,
                body_len: response.body_len,
                request: response.request.clone(),
                latency: response.latency,
            }
        } else {
            response.status_only()
        };
        Some(Transaction::Http {
            request: Box::new(pending.request),
            latency: response.latency.unwrap_or_default(),
            response: Box::new(head),
        })
    }
}

/// A statement sent and not answered yet, or a synchronisation point.
#[derive(Debug)]
enum Pending {
    /// A simple `Query` (may hold several statements, each ending in a CommandComplete) or an
    /// `Execute` of a bound portal.
    Statement {
        sql: String,
        params: Vec<Option<String>>,
        ts: Timestamp,
        rows: u64,
        simple: bool,
    },
    /// `Sync` (or the end of a simple Query): the server answers it with ReadyForQuery.
    Sync,
}

/// Follows one PostgreSQL connection's statements, portals and answers.
#[derive(Debug, Default)]
pub(crate) struct PgTracker {
    statements: HashMap<String, String>,
    portals: HashMap<String, (String, Vec<Option<String>>)>,
    pending: VecDeque<Pending>,
    /// Set when the next error is a stage's, not the server's.
    injected: Option<Injected>,
}

impl PgTracker {
    /// A simple `Query` was sent at `ts`.
    pub fn query(&mut self, sql: impl Into<String>, ts: Timestamp) {
        self.push(Pending::Statement {
            sql: bounded(sql.into()),
            params: Vec::new(),
            ts,
            rows: 0,
            simple: true,
        });
        self.push(Pending::Sync);
    }

    /// `Parse` prepared `sql` as statement `name` (empty: the unnamed statement).
    pub fn parse(&mut self, name: &str, sql: impl Into<String>) {
        remember(&mut self.statements, name, bounded(sql.into()));
    }

    /// The SQL statement `name` was prepared from, when its `Parse` was seen.
    pub fn statement_sql(&self, name: &str) -> Option<&str> {
        self.statements.get(name).map(String::as_str)
    }

    /// The SQL portal `name` was bound from, when its `Bind` was seen.
    pub fn portal_sql(&self, name: &str) -> Option<&str> {
        self.portals.get(name).map(|(sql, _)| sql.as_str())
    }

    /// The next statement's failure is one a stage injected.
    pub fn inject_next(&mut self, injected: Injected) {
        self.injected = Some(injected);
    }

    /// `Bind` bound statement `statement` with `params` into `portal`.
    pub fn bind(&mut self, portal: &str, statement: &str, mut params: Vec<Option<String>>) {
        params.truncate(MAX_PARAMS);
        let sql = self.statements.get(statement).cloned().unwrap_or_default();
        remember(&mut self.portals, portal, (sql, params));
    }

    /// `Execute` ran `portal` at `ts`.
    pub fn execute(&mut self, portal: &str, ts: Timestamp) {
        let (sql, params) = self.portals.get(portal).cloned().unwrap_or_default();
        self.push(Pending::Statement {
            sql,
            params,
            ts,
            rows: 0,
            simple: false,
        });
    }

    /// `Close` dropped a statement (`b'S'`) or portal (`b'P'`).
    pub fn close(&mut self, kind: u8, name: &str) {
        match kind {
            b'S' => self.statements.remove(name),
            _ => self.portals.remove(name).map(|(sql, _)| sql),
        };
    }

    /// `Sync` was sent.
    pub fn sync(&mut self) {
        self.push(Pending::Sync);
    }

    /// A `DataRow` came back.
    pub fn data_row(&mut self) {
        if let Some(Pending::Statement { rows, .. }) = self.pending.front_mut() {
            *rows += 1;
        }
    }

    /// A statement finished with `CommandComplete` (`tag`), `EmptyQueryResponse` (empty tag)
    /// or `PortalSuspended`, at `ts`.
    pub fn complete(&mut self, tag: impl Into<String>, ts: Timestamp) -> Option<PgTransaction> {
        let mut tx = self.finish(ts)?;
        let tag = tag.into();
        if let Some(n) = tag_rows(&tag) {
            tx.rows = n;
        }
        tx.tag = tag;
        Some(tx)
    }

    /// A statement failed with an `ErrorResponse` at `ts`.
    pub fn error(&mut self, code: &str, message: &str, ts: Timestamp) -> Option<PgTransaction> {
        let injected = self.injected.take();
        let mut tx = self.finish(ts)?;
        tx.error_code = Some(code.to_string());
        tx.error_message = Some(message.to_string());
        tx.injected = injected;
        Some(tx)
    }

    /// `ReadyForQuery`: every statement sent before the matching sync point that got no
    /// answer (skipped after an error) is forgotten.
    pub fn ready(&mut self) {
        while let Some(p) = self.pending.pop_front() {
            if matches!(p, Pending::Sync) {
                break;
            }
        }
    }

    fn finish(&mut self, ts: Timestamp) -> Option<PgTransaction> {
        let Some(Pending::Statement {
            sql,
            params,
            ts: started,
            rows,
            simple,
        }) = self.pending.front_mut()
        else {
            return None;
        };
        let mut tx = PgTransaction {
            params: std::mem::take(params),
            rows: *rows,
            latency: ts.since(*started),
            ..Default::default()
        };
        if *simple {
            // A simple query may hold several statements: the next one starts now.
            tx.sql = sql.clone();
            *rows = 0;
            *started = ts;
        } else {
            tx.sql = std::mem::take(sql);
            self.pending.pop_front();
        }
        Some(tx)
    }

    fn push(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }
}

fn remember<V>(map: &mut HashMap<String, V>, name: &str, value: V) {
    if map.len() >= MAX_NAMED && !map.contains_key(name) {
        map.clear();
    }
    map.insert(name.to_string(), value);
}

fn bounded(mut sql: String) -> String {
    if sql.len() > MAX_SQL {
        let mut end = MAX_SQL;
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        sql.truncate(end);
    }
    sql
}

/// Rows affected or returned, from a command tag (`INSERT 0 3` → 3, `SELECT 2` → 2).
fn tag_rows(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_give_rows() {
        assert_eq!(tag_rows("INSERT 0 3"), Some(3));
        assert_eq!(tag_rows("SELECT 12"), Some(12));
        assert_eq!(tag_rows("BEGIN"), None);
        assert_eq!(tag_rows(""), None);
    }

    #[test]
    fn extended_protocol_pairs_execute_with_completion() {
        let mut t = PgTracker::default();
        t.parse("s1", "select $1");
        t.bind("", "s1", vec![Some("7".into()), None]);
        t.execute("", Timestamp(100));
        t.sync();
        t.data_row();
        let tx = t.complete("SELECT 1", Timestamp(350)).unwrap();
        assert_eq!(tx.sql, "select $1");
        assert_eq!(tx.params, vec![Some("7".into()), None]);
        assert_eq!(tx.rows, 1);
        assert_eq!(tx.latency.as_micros(), 250);
        t.ready();
        assert!(t.pending.is_empty());
    }

    #[test]
    fn statements_skipped_after_an_error_are_dropped_at_ready() {
        let mut t = PgTracker::default();
        t.parse("", "bad");
        t.bind("", "", vec![]);
        t.execute("", Timestamp(1));
        t.execute("", Timestamp(2));
        t.sync();
        let tx = t.error("42601", "syntax error", Timestamp(5)).unwrap();
        assert_eq!(tx.error_code.as_deref(), Some("42601"));
        t.ready();
        assert!(t.pending.is_empty());
        assert!(t.complete("SELECT 1", Timestamp(9)).is_none());
    }

    #[test]
    fn simple_query_with_two_statements_gives_two_transactions() {
        let mut t = PgTracker::default();
        t.query("begin; select 1", Timestamp(0));
        assert_eq!(t.complete("BEGIN", Timestamp(1)).unwrap().tag, "BEGIN");
        t.data_row();
        let tx = t.complete("SELECT 1", Timestamp(3)).unwrap();
        assert_eq!((tx.rows, tx.latency.as_micros()), (1, 2));
        t.ready();
        assert!(t.pending.is_empty());
    }

    #[test]
    fn pending_is_bounded() {
        let mut t = PgTracker::default();
        for i in 0..10_000 {
            t.query("select 1", Timestamp(i));
        }
        assert!(t.pending.len() <= MAX_PENDING);
        let mut h = HttpPairing::default();
        for i in 0..10_000 {
            h.push(&HttpRequest::default(), Timestamp(i));
        }
        assert!(h.pending.len() <= MAX_PENDING);
    }
}
