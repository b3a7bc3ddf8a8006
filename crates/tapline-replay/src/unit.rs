//! Feeds grouped into units of work per captured connection, and which units are replayed.
//!
//! A unit is what is sent before waiting for the server: one HTTP request; one PostgreSQL
//! simple `Query` with the COPY data that follows it; or an extended-protocol batch up to and
//! including its `Sync`. Each unit carries the outcomes the capture saw for it (the HTTP
//! response; the statements that completed before the connection's next unit began), so the
//! report can compare. Start-up and authentication messages are not units: the replay does
//! its own (the captured start-up parameters other than user and database are kept).

use std::collections::{HashMap, VecDeque};

use regex::Regex;
use tapline_core::{HttpRequest, PgTransaction, Timestamp};

use crate::feed::{ConnId, Feed, HttpOutcome, PgMessage};

/// One unit of work.
#[derive(Debug)]
pub(crate) enum Unit {
    /// An HTTP request and what the capture saw answer it.
    Http {
        /// When it was sent.
        ts: Timestamp,
        /// The request.
        request: Box<HttpRequest>,
        /// The captured answer, if any.
        captured: Option<HttpOutcome>,
    },
    /// PostgreSQL messages sent together and the statements they completed.
    Pg {
        /// When the first was sent.
        ts: Timestamp,
        /// The messages, in order.
        messages: Vec<PgMessage>,
        /// The captured start-up parameters (the connection's first unit only).
        startup: Option<Vec<(String, String)>>,
        /// The statements the capture saw complete.
        captured: Vec<PgTransaction>,
    },
}

impl Unit {
    /// When the unit was sent in the capture.
    pub fn ts(&self) -> Timestamp {
        match self {
            Unit::Http { ts, .. } | Unit::Pg { ts, .. } => *ts,
        }
    }
}

/// What is replayed: `--limit`, `--filter-path`, `--filter-sql`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// At most this many units (HTTP requests, PostgreSQL units), in capture order.
    pub limit: Option<u64>,
    /// Only HTTP requests whose path (origin form) matches.
    pub filter_path: Option<Regex>,
    /// Only PostgreSQL units with a statement whose text matches.
    pub filter_sql: Option<Regex>,
}

impl Selection {
    fn keeps(&self, unit: &Unit) -> bool {
        match unit {
            Unit::Http { request, .. } => self
                .filter_path
                .as_ref()
                .is_none_or(|re| re.is_match(&request.path)),
            Unit::Pg { messages, .. } => self.filter_sql.as_ref().is_none_or(|re| {
                messages
                    .iter()
                    .filter_map(|m| m.sql.as_deref())
                    .any(|sql| re.is_match(sql))
            }),
        }
    }
}

/// Messages that belong to the start-up and authentication the replay does itself.
fn is_startup(type_name: &str) -> bool {
    matches!(
        type_name,
        "StartupMessage"
            | "SSLRequest"
            | "GSSENCRequest"
            | "CancelRequest"
            | "PasswordMessage"
            | "SASLInitialResponse"
            | "SASLResponse"
            | "GSSResponse"
            | "Terminate"
    )
}

/// True for the messages of COPY FROM STDIN's data.
pub(crate) fn is_copy(type_name: &str) -> bool {
    matches!(type_name, "CopyData" | "CopyDone" | "CopyFail")
}

/// Whether a message of type `next` belongs to the unit whose last message is `last`: an
/// extended-protocol batch runs to its `Sync`; COPY data belongs to the statement before
/// it (a `Query`, or a batch whose `Sync` the server ignores while it copies in), and so
/// does the `Sync` that ends an extended-protocol COPY.
fn extends(last: &str, next: &str) -> bool {
    let closed = matches!(last, "Sync" | "Query") || is_copy(last);
    !closed || is_copy(next) || (next == "Sync" && matches!(last, "CopyDone" | "CopyFail"))
}

/// One connection's units being assembled.
#[derive(Default)]
struct Pending {
    /// HTTP requests waiting for their captured answers, or the PostgreSQL unit being built
    /// (at most one, at the back).
    units: VecDeque<Unit>,
    /// The captured start-up parameters, until the first unit takes them.
    startup: Option<Vec<(String, String)>>,
}

/// Turns feeds into units, per connection, in each connection's order.
#[derive(Default)]
pub(crate) struct Assembler {
    conns: HashMap<ConnId, Pending>,
    selection: Selection,
    /// Units released so far (before the selection).
    pub seen: u64,
    /// Units selected so far.
    pub selected: u64,
}

/// What the assembler hands on.
#[derive(Debug)]
pub(crate) enum Ready {
    /// A selected unit for a connection.
    Unit(ConnId, Unit),
    /// A connection that ended: nothing more comes for it.
    End(ConnId),
}

impl Assembler {
    /// An assembler applying `selection`.
    pub fn new(selection: Selection) -> Assembler {
        Assembler {
            selection,
            ..Assembler::default()
        }
    }

    /// True once `--limit` units were selected: nothing more will be.
    pub fn full(&self) -> bool {
        self.selection.limit.is_some_and(|l| self.selected >= l)
    }

    /// Takes one feed; what became ready is appended to `out`.
    pub fn push(&mut self, feed: Feed, out: &mut Vec<Ready>) {
        match feed {
            Feed::HttpRequest { conn, ts, request } => {
                let units = &mut self.conns.entry(conn).or_default().units;
                units.push_back(Unit::Http {
                    ts,
                    request,
                    captured: None,
                });
            }
            Feed::HttpResponse { conn, outcome } => {
                let Some(p) = self.conns.get_mut(&conn) else {
                    return;
                };
                let waiting = p.units.iter_mut().find_map(|u| match u {
                    Unit::Http { captured, .. } if captured.is_none() => Some(captured),
                    _ => None,
                });
                if let Some(captured) = waiting {
                    *captured = Some(outcome);
                }
                self.release(
                    conn,
                    |u| {
                        matches!(
                            u,
                            Unit::Http {
                                captured: Some(_),
                                ..
                            }
                        )
                    },
                    out,
                );
            }
            Feed::PgMessage { conn, ts, message } => self.pg_message(conn, ts, message, out),
            Feed::PgOutcome { conn, tx } => {
                if let Some(Unit::Pg { captured, .. }) =
                    self.conns.get_mut(&conn).and_then(|p| p.units.back_mut())
                {
                    captured.push(*tx);
                }
            }
            Feed::End { conn } => {
                self.release(conn, |_| true, out);
                if self.conns.remove(&conn).is_some() {
                    out.push(Ready::End(conn));
                }
            }
        }
    }

    /// Every connection's remaining units, then their ends (the source is done).
    pub fn finish(&mut self, out: &mut Vec<Ready>) {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.push(Feed::End { conn }, out);
        }
    }

    fn pg_message(
        &mut self,
        conn: ConnId,
        ts: Timestamp,
        message: PgMessage,
        out: &mut Vec<Ready>,
    ) {
        let p = self.conns.entry(conn).or_default();
        if message.type_name == "StartupMessage" {
            p.startup = Some(message.parameters);
            return;
        }
        if is_startup(&message.type_name) {
            return;
        }
        let extends = match p.units.back() {
            Some(Unit::Pg { messages, .. }) => extends(
                messages.last().map_or("", |m| &m.type_name),
                &message.type_name,
            ),
            _ => false,
        };
        if !extends {
            self.release(conn, |_| true, out);
            let p = self.conns.entry(conn).or_default();
            p.units.push_back(Unit::Pg {
                ts,
                messages: Vec::new(),
                startup: p.startup.take(),
                captured: Vec::new(),
            });
        }
        let p = self.conns.entry(conn).or_default();
        if let Some(Unit::Pg { messages, .. }) = p.units.back_mut() {
            messages.push(message);
        }
    }

    /// Releases `conn`'s leading units that `done` says are complete, through the selection.
    fn release(&mut self, conn: ConnId, done: impl Fn(&Unit) -> bool, out: &mut Vec<Ready>) {
        let Some(p) = self.conns.get_mut(&conn) else {
            return;
        };
        while p.units.front().is_some_and(&done) {
            let Some(mut unit) = p.units.pop_front() else {
                break;
            };
            self.seen += 1;
            let full = self.selection.limit.is_some_and(|l| self.selected >= l);
            if full || !self.selection.keeps(&unit) {
                // A skipped first unit hands its start-up parameters on.
                if let Unit::Pg {
                    startup: s @ Some(_),
                    ..
                } = &mut unit
                {
                    p.startup = s.take();
                }
                continue;
            }
            if let Unit::Pg { startup, .. } = &mut unit {
                if startup.is_none() {
                    *startup = p.startup.take();
                }
            }
            self.selected += 1;
            out.push(Ready::Unit(conn, unit));
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(conn: ConnId, type_name: &str, sql: Option<&str>) -> Feed {
        Feed::PgMessage {
            conn,
            ts: Timestamp(0),
            message: PgMessage {
                type_name: type_name.into(),
                raw: Bytes::new(),
                sql: sql.map(String::from),
                parameters: vec![("user".into(), "u".into())],
            },
        }
    }

    fn outcome(conn: ConnId, tag: &str) -> Feed {
        Feed::PgOutcome {
            conn,
            tx: Box::new(PgTransaction {
                tag: tag.into(),
                ..Default::default()
            }),
        }
    }

    /// The units' message types and captured tags, in order.
    fn units(selection: Selection, feeds: Vec<Feed>) -> Vec<(Vec<String>, Vec<String>)> {
        let mut a = Assembler::new(selection);
        let mut out = Vec::new();
        for f in feeds {
            a.push(f, &mut out);
        }
        a.finish(&mut out);
        out.into_iter()
            .filter_map(|r| match r {
                Ready::Unit(
                    _,
                    Unit::Pg {
                        messages, captured, ..
                    },
                ) => Some((
                    messages.into_iter().map(|m| m.type_name).collect(),
                    captured.into_iter().map(|t| t.tag).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    fn session() -> Vec<Feed> {
        vec![
            msg(1, "StartupMessage", None),
            msg(1, "Query", Some("INSERT 1")),
            outcome(1, "INSERT 0 1"),
            msg(1, "Parse", Some("SELECT $1")),
            msg(1, "Bind", Some("SELECT $1")),
            msg(1, "Execute", Some("SELECT $1")),
            msg(1, "Sync", None),
            outcome(1, "SELECT 1"),
            // psycopg's COPY: an extended batch, the data, and the Sync that ends it.
            msg(1, "Parse", Some("COPY t FROM STDIN")),
            msg(1, "Execute", None),
            msg(1, "Sync", None),
            msg(1, "CopyData", None),
            msg(1, "CopyDone", None),
            msg(1, "Sync", None),
            outcome(1, "COPY 2"),
            msg(1, "Query", Some("COPY t FROM STDIN")),
            msg(1, "CopyData", None),
            msg(1, "CopyDone", None),
            outcome(1, "COPY 1"),
            msg(1, "Terminate", None),
            Feed::End { conn: 1 },
        ]
    }

    #[test]
    fn postgres_messages_group_into_units() {
        let got = units(Selection::default(), session());
        let names = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], (names(&["Query"]), names(&["INSERT 0 1"])));
        assert_eq!(got[1].0, names(&["Parse", "Bind", "Execute", "Sync"]));
        assert_eq!(
            got[2],
            (
                names(&["Parse", "Execute", "Sync", "CopyData", "CopyDone", "Sync"]),
                names(&["COPY 2"])
            )
        );
        assert_eq!(got[3].0, names(&["Query", "CopyData", "CopyDone"]));
    }

    #[test]
    fn the_selection_limits_and_filters_units() {
        let limited = Selection {
            limit: Some(2),
            ..Selection::default()
        };
        assert_eq!(units(limited, session()).len(), 2);
        let copies = Selection {
            filter_sql: Some(Regex::new("^COPY").unwrap()),
            ..Selection::default()
        };
        assert_eq!(units(copies, session()).len(), 2);
    }

    #[test]
    fn http_requests_wait_for_their_answers() {
        let req = |path: &str| Feed::HttpRequest {
            conn: 7,
            ts: Timestamp(0),
            request: Box::new(HttpRequest {
                path: path.into(),
                ..Default::default()
            }),
        };
        let answer = |status| Feed::HttpResponse {
            conn: 7,
            outcome: HttpOutcome {
                status,
                body_len: 0,
                latency: None,
            },
        };
        let mut a = Assembler::new(Selection {
            filter_path: Some(Regex::new("^/keep").unwrap()),
            ..Selection::default()
        });
        let mut out = Vec::new();
        for f in [req("/keep/1"), req("/drop"), answer(200)] {
            a.push(f, &mut out);
        }
        assert!(matches!(
            &out[..],
            [Ready::Unit(
                7,
                Unit::Http {
                    captured: Some(HttpOutcome { status: 200, .. }),
                    ..
                }
            )]
        ));
        a.push(Feed::End { conn: 7 }, &mut out);
        assert!(matches!(out.last(), Some(Ready::End(7))));
        assert_eq!((a.seen, a.selected), (2, 1));
    }
}
