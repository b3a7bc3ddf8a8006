//! Human text: one line per meaningful thing, readable without flags.
//!
//! [`describe`] renders any event as one line (syslog uses it as the message text);
//! [`HumanLines`] picks what a person watching a terminal wants: HTTP exchanges (from the
//! response, which carries its request), SQL statements with their outcome, alerts, records,
//! reassembly gaps and flow summaries, leaving out the summary of an HTTP flow whose exchanges
//! were already printed.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;
use tapline_core::{
    Event, EventKind, Flow, FlowId, HttpResponse, PgTransaction, Protocol, Record, Transaction,
};

/// Flow ids remembered at most (HTTP flows with printed exchanges, awaiting their end); past
/// it the memory is cleared, at worst printing one redundant summary per flow.
const MAX_REMEMBERED_FLOWS: usize = 100_000;

/// Chooses and renders the human lines, remembering which HTTP flows already printed
/// exchanges so their summaries can be left out.
#[derive(Debug, Default)]
pub struct HumanLines {
    http_printed: Mutex<HashSet<FlowId>>,
}

impl HumanLines {
    /// A fresh formatter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the line for `event` (with a newline) to `out` when it deserves one.
    pub fn write_line(&self, event: &Event, out: &mut String) {
        let print = match &event.kind {
            EventKind::HttpResponse(_) => {
                if let Some(flow) = &event.flow {
                    let mut printed = self.http_printed.lock();
                    if printed.len() >= MAX_REMEMBERED_FLOWS {
                        printed.clear();
                    }
                    printed.insert(flow.id);
                }
                true
            }
            EventKind::Transaction(Transaction::Postgres(_))
            | EventKind::Alert(_)
            | EventKind::Record(_)
            | EventKind::Gap { .. } => true,
            EventKind::FlowEnd { .. } => match &event.flow {
                Some(flow) => !self.http_printed.lock().remove(&flow.id),
                None => true,
            },
            EventKind::FlowStart
            | EventKind::Packet(_)
            | EventKind::Chunk(_)
            | EventKind::HttpRequest(_)
            | EventKind::Message(_)
            | EventKind::Transaction(Transaction::Http { .. }) => false,
        };
        if print {
            describe(event, out);
            out.push('\n');
        }
    }
}

/// Renders `event` as one line (no newline) appended to `out`.
pub fn describe(event: &Event, out: &mut String) {
    let flow = event.flow.as_deref();
    match &event.kind {
        EventKind::FlowStart => {
            out.push_str("flow ");
            endpoints(out, flow);
            out.push_str(" opened");
        }
        EventKind::FlowEnd {
            stats,
            end,
            duration,
        } => {
            out.push_str("flow ");
            endpoints(out, flow);
            let _ = write!(
                out,
                " {} ↑ {} ↓ {} {}",
                Size(stats.bytes_from_client),
                Size(stats.bytes_from_server),
                Millis(*duration),
                end.as_str()
            );
            if let Some(reason) = end.reason() {
                out.push_str(" (");
                push_clean(out, reason);
                out.push(')');
            }
        }
        EventKind::Packet(p) => {
            let _ = write!(out, "packet {} {} B", p.proto, p.len);
            if let (Some(src), Some(dst)) = (p.src, p.dst) {
                let _ = write!(out, " {src}:{} → {dst}:{}", p.sport, p.dport);
            }
        }
        EventKind::Chunk(c) => {
            out.push_str("chunk ");
            endpoints(out, flow);
            let _ = write!(
                out,
                " {} from {}",
                Size(c.data.len() as u64),
                c.from.as_str()
            );
        }
        EventKind::Gap { from, len } => {
            out.push_str("gap ");
            endpoints(out, flow);
            let _ = write!(out, " {} missing from {}", Size(*len), from.as_str());
        }
        EventKind::HttpRequest(r) => {
            out.push_str("http ");
            client(out, flow);
            out.push_str(&r.method);
            out.push(' ');
            push_clean(out, r.url.as_deref().unwrap_or(&r.path));
        }
        EventKind::HttpResponse(r) => http_exchange(out, flow, r),
        EventKind::Message(m) => {
            let _ = write!(out, "{} ", short_protocol(m.protocol));
            client(out, flow);
            let _ = write!(out, "{} {}", m.from.as_str(), m.type_name);
        }
        EventKind::Transaction(Transaction::Http { response, .. }) => {
            http_exchange(out, flow, response)
        }
        EventKind::Transaction(Transaction::Postgres(pg)) => sql_statement(out, flow, pg),
        EventKind::Alert(r) => plugin_record(out, "ALERT", flow, r),
        EventKind::Record(r) => plugin_record(out, "record", flow, r),
    }
}

/// `http 127.0.0.1:51234 GET http://127.0.0.1:7070/bytes/10 → 200 OK 1.2 ms 10 B`
fn http_exchange(out: &mut String, flow: Option<&Flow>, r: &HttpResponse) {
    out.push_str("http ");
    client(out, flow);
    match &r.request {
        Some(q) => {
            out.push_str(&q.method);
            out.push(' ');
            push_clean(out, q.url.as_deref().unwrap_or(&q.path));
        }
        None => out.push('?'),
    }
    let _ = write!(out, " → {} ", r.status);
    push_clean(out, &r.reason);
    if let Some(latency) = r.latency {
        let _ = write!(out, " {}", Millis(latency));
    }
    let _ = write!(out, " {}", Size(r.body_len));
}

/// `pg 127.0.0.1:51234 SELECT 1 row 0.4 ms  select now()`, or with `ERROR 42P01` and the
/// error message after the statement.
fn sql_statement(out: &mut String, flow: Option<&Flow>, pg: &PgTransaction) {
    out.push_str("pg ");
    client(out, flow);
    if let Some(code) = &pg.error_code {
        let _ = write!(out, "ERROR {code} {}  ", Millis(pg.latency));
        if let Some(injected) = &pg.injected {
            let _ = write!(out, "[injected {} by {}] ", injected.fault, injected.stage);
        }
        push_sql(out, &pg.sql);
        if let Some(message) = &pg.error_message {
            out.push_str(" — ");
            push_clean(out, message);
        }
        return;
    }
    let command: Vec<&str> = pg
        .tag
        .split_whitespace()
        .take_while(|w| !w.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let counted = pg.tag.split_whitespace().count() > command.len();
    if command.is_empty() {
        out.push_str("OK");
    } else {
        push_clean(out, &command.join(" "));
    }
    if counted || pg.rows > 0 {
        let _ = write!(
            out,
            " {} {}",
            pg.rows,
            if pg.rows == 1 { "row" } else { "rows" }
        );
    }
    let _ = write!(out, " {}  ", Millis(pg.latency));
    push_sql(out, &pg.sql);
}

/// `ALERT ua-watch 127.0.0.1:51234 → 127.0.0.1:80 scanner user agent ua="pcap/1.0"`
fn plugin_record(out: &mut String, label: &str, flow: Option<&Flow>, r: &Record) {
    let _ = write!(out, "{label} ");
    push_clean(out, &r.plugin);
    if flow.is_some() {
        out.push(' ');
        endpoints(out, flow);
    }
    if !r.message.is_empty() {
        out.push(' ');
        push_clean(out, &r.message);
    }
    if let Some(fields) = r.fields.as_object() {
        for (k, v) in fields {
            out.push(' ');
            push_clean(out, k);
            out.push('=');
            push_clean(out, &v.to_string());
        }
    }
}

/// `protocol client → server`
fn endpoints(out: &mut String, flow: Option<&Flow>) {
    match flow {
        Some(f) => {
            let _ = write!(out, "{} {} → {}", f.protocol, f.client, f.server);
        }
        None => out.push('-'),
    }
}

/// `client ` (with a trailing space) when the flow is known.
fn client(out: &mut String, flow: Option<&Flow>) {
    if let Some(f) = flow {
        let _ = write!(out, "{} ", f.client);
    }
}

fn short_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Postgres => "pg",
        other => other.as_str(),
    }
}

/// SQL on one line: runs of whitespace become one space; long statements are cut.
fn push_sql(out: &mut String, sql: &str) {
    const MAX_SQL_CHARS: usize = 300;
    let mut first = true;
    let mut written = 0;
    for word in sql.split_whitespace() {
        if !first {
            out.push(' ');
        }
        first = false;
        written += word.chars().count() + 1;
        if written > MAX_SQL_CHARS {
            out.push('…');
            return;
        }
        push_clean(out, word);
    }
}

/// Appends `s` with control characters escaped, so one event stays one line and the
/// terminal is never driven by traffic.
fn push_clean(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// A byte count for people: `10 B`, `3.4 KiB`, `1.2 MiB`.
pub struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `0.4 ms`, `12.5 ms`, `340 ms`, `2.31 s`.
pub struct Millis(pub Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms < 100.0 {
            write!(f, "{ms:.1} ms")
        } else if ms < 10_000.0 {
            write!(f, "{ms:.0} ms")
        } else {
            write!(f, "{:.2} s", ms / 1000.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use tapline_core::FlowEnd;

    use super::*;
    use crate::testing::*;

    fn lines(events: &[Event]) -> String {
        let human = HumanLines::new();
        let mut out = String::new();
        for e in events {
            human.write_line(e, &mut out);
        }
        out
    }

    #[test]
    fn http_exchange_line() {
        assert_eq!(
            lines(&[
                event(EventKind::FlowStart),
                event(EventKind::HttpRequest(request())),
                event(EventKind::HttpResponse(response())),
            ]),
            "http 127.0.0.1:51234 GET http://127.0.0.1:7070/bytes/10 → 200 OK 1.2 ms 10 B\n"
        );
    }

    #[test]
    fn http_flow_summary_only_when_nothing_was_printed() {
        let end = event(flow_end(FlowEnd::Fin));
        let printed = lines(&[event(EventKind::HttpResponse(response())), end.clone()]);
        assert_eq!(printed.lines().count(), 1, "{printed}");
        assert_eq!(
            lines(&[end]),
            "flow http 127.0.0.1:51234 → 127.0.0.1:7070 100 B ↑ 2.0 KiB ↓ 12.5 ms fin\n"
        );
    }

    #[test]
    fn sql_lines_with_rows_and_errors() {
        let pg = |t| Event::on_flow(&pg_flow(), TS, EventKind::Transaction(t));
        assert_eq!(
            lines(&[pg(pg_select()), pg(pg_error())]),
            "pg 127.0.0.1:51234 SELECT 1 row 0.4 ms  select now()\n\
             pg 127.0.0.1:51234 ERROR 42P01 0.3 ms  select * from nope — relation \"nope\" does not exist\n"
        );
        let insert = Transaction::Postgres(PgTransaction {
            sql: "insert into t values (1),(2)".into(),
            rows: 2,
            tag: "INSERT 0 2".into(),
            latency: Duration::from_millis(250),
            ..Default::default()
        });
        assert_eq!(
            lines(&[pg(insert)]),
            "pg 127.0.0.1:51234 INSERT 2 rows 250 ms  insert into t values (1),(2)\n"
        );
    }

    #[test]
    fn alerts_records_and_closed_flows() {
        let mut record = record();
        record.message = "line\nbreak".into();
        assert_eq!(
            lines(&[
                event(EventKind::Alert(record.clone())),
                Event {
                    flow: None,
                    ..event(EventKind::Record(record))
                },
                event(flow_end(FlowEnd::ClosedByPlugin("nope".into()))),
            ]),
            "ALERT ua-watch http 127.0.0.1:51234 → 127.0.0.1:7070 line\\nbreak ua=\"pcap/1.0\"\n\
             record ua-watch line\\nbreak ua=\"pcap/1.0\"\n\
             flow http 127.0.0.1:51234 → 127.0.0.1:7070 100 B ↑ 2.0 KiB ↓ 12.5 ms closed_by_plugin (nope)\n"
        );
    }

    #[test]
    fn quiet_kinds_print_nothing() {
        assert_eq!(
            lines(&[
                event(EventKind::FlowStart),
                event(EventKind::Message(message())),
                event(EventKind::Transaction(http_transaction())),
                event(EventKind::Packet(packet())),
            ]),
            ""
        );
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(Size(10).to_string(), "10 B");
        assert_eq!(Size(3 * 1024 + 400).to_string(), "3.4 KiB");
        assert_eq!(Size(5 << 20).to_string(), "5.0 MiB");
        assert_eq!(Millis(Duration::from_micros(420)).to_string(), "0.4 ms");
        assert_eq!(Millis(Duration::from_millis(2310)).to_string(), "2310 ms");
        assert_eq!(Millis(Duration::from_secs(12)).to_string(), "12.00 s");
    }
}
