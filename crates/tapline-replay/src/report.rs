//! The comparison: per HTTP request or PostgreSQL statement, what the capture saw against
//! what the replay got (HTTP status and body length; PostgreSQL command tag, rows and
//! SQLSTATE), counted same / different / failed, the first differences kept whole, and the
//! latencies of both sides as percentiles. Printed for people ([`Report::summary`]) and as
//! JSON for machines ([`Report::to_json`]).

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tapline_core::PgTransaction;

use crate::feed::{ConnId, HttpOutcome};

/// Differences and failures kept whole in the report.
const KEPT: usize = 20;

/// How a replayed exchange compares with the captured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Same outcome.
    Same,
    /// Another outcome.
    Different,
    /// No outcome: the connection failed or the server did not answer.
    Failed,
    /// Replayed, but the capture had no outcome to compare with.
    Uncompared,
}

/// What one side saw of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// An HTTP answer.
    Http {
        /// Status code.
        status: u16,
        /// Body length.
        body_len: u64,
    },
    /// A PostgreSQL statement's end.
    Pg {
        /// The command tag (empty on error).
        tag: String,
        /// Rows returned or affected.
        rows: u64,
        /// SQLSTATE, when it failed.
        error_code: Option<String>,
    },
}

impl From<&HttpOutcome> for Outcome {
    fn from(o: &HttpOutcome) -> Outcome {
        Outcome::Http {
            status: o.status,
            body_len: o.body_len,
        }
    }
}

impl From<&PgTransaction> for Outcome {
    fn from(t: &PgTransaction) -> Outcome {
        Outcome::Pg {
            tag: t.tag.clone(),
            rows: t.rows,
            error_code: t.error_code.clone(),
        }
    }
}

/// One compared exchange.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// The captured connection it came from.
    pub conn: ConnId,
    /// `http` or `postgres`.
    pub protocol: &'static str,
    /// `METHOD path`, or the statement text.
    pub what: String,
    /// What the capture saw.
    pub captured: Option<Outcome>,
    /// What the replay got.
    pub replayed: Option<Outcome>,
    /// Why there is no replayed outcome.
    pub error: Option<String>,
    /// The comparison.
    pub verdict: Verdict,
}

impl Exchange {
    /// Compares `captured` with `replayed` (or the error that stood in its way).
    pub fn compare(
        conn: ConnId,
        protocol: &'static str,
        what: String,
        captured: Option<Outcome>,
        replayed: Result<Outcome, String>,
    ) -> Exchange {
        let (replayed, error) = match replayed {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        let verdict = match (&captured, &replayed) {
            (_, None) => Verdict::Failed,
            (None, Some(_)) => Verdict::Uncompared,
            (Some(c), Some(r)) if c == r => Verdict::Same,
            _ => Verdict::Different,
        };
        Exchange {
            conn,
            protocol,
            what,
            captured,
            replayed,
            error,
            verdict,
        }
    }
}

/// The whole run's comparison.
#[derive(Debug, Default)]
pub struct Report {
    same: u64,
    different: u64,
    failed: u64,
    uncompared: u64,
    /// The first differences and failures, whole.
    kept: Vec<Exchange>,
    captured_latency: Vec<Duration>,
    replayed_latency: Vec<Duration>,
    /// Units read from the source, before `--limit` and the filters.
    pub units_seen: u64,
    /// Units replayed.
    pub units_replayed: u64,
    /// From the first to the last captured unit.
    pub captured_span: Duration,
    /// How long the replay took.
    pub elapsed: Duration,
}

impl Report {
    /// Adds one exchange with its latencies (captured, replayed) when known.
    pub fn add(&mut self, exchange: Exchange, latency: (Option<Duration>, Option<Duration>)) {
        match exchange.verdict {
            Verdict::Same => self.same += 1,
            Verdict::Different => self.different += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::Uncompared => self.uncompared += 1,
        }
        self.captured_latency.extend(latency.0);
        self.replayed_latency.extend(latency.1);
        if matches!(exchange.verdict, Verdict::Different | Verdict::Failed)
            && self.kept.len() < KEPT
        {
            self.kept.push(exchange);
        }
    }

    /// Exchanges compared so far.
    pub fn total(&self) -> u64 {
        self.same + self.different + self.failed + self.uncompared
    }

    /// Exchanges that differ or failed.
    pub fn differences(&self) -> u64 {
        self.different + self.failed
    }

    /// The report for people: counts, latencies, the first differences.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // An interrupted run has no timing.
        let timing = match self.elapsed.as_secs_f64() {
            0.0 => String::new(),
            secs => format!(
                " in {secs:.2}s ({:.0}/s; captured over {:.2}s)",
                self.total() as f64 / secs,
                self.captured_span.as_secs_f64()
            ),
        };
        let _ = writeln!(
            s,
            "replay: {} exchanges{timing}: {} same, {} different, {} failed, {} without a captured outcome",
            self.total(),
            self.same,
            self.different,
            self.failed,
            self.uncompared
        );
        for (name, samples) in [
            ("captured", &self.captured_latency),
            ("replayed", &self.replayed_latency),
        ] {
            if let Some(p) = Percentiles::of(samples) {
                let _ = writeln!(
                    s,
                    "latency {name}: p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  max {:.2}ms",
                    p.p50, p.p90, p.p99, p.max
                );
            }
        }
        for e in &self.kept {
            let show = |o: &Option<Outcome>| match o {
                Some(o) => serde_json::to_string(o).unwrap_or_default(),
                None => "-".to_string(),
            };
            let _ = writeln!(
                s,
                "{} [conn {}] {}: captured {} replayed {}{}",
                match e.verdict {
                    Verdict::Failed => "FAILED",
                    _ => "DIFFERENT",
                },
                e.conn,
                one_line(&e.what),
                show(&e.captured),
                show(&e.replayed),
                e.error
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        s
    }

    /// The report for machines (`--report FILE.json`).
    pub fn to_json(&self) -> Value {
        let latency = |samples: &Vec<Duration>| {
            Percentiles::of(samples).map(|p| {
                json!({ "count": samples.len(), "p50_ms": p.p50, "p90_ms": p.p90,
                        "p99_ms": p.p99, "max_ms": p.max })
            })
        };
        json!({
            "exchanges": self.total(),
            "same": self.same,
            "different": self.different,
            "failed": self.failed,
            "uncompared": self.uncompared,
            "units_seen": self.units_seen,
            "units_replayed": self.units_replayed,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1000.0,
            "captured_span_ms": self.captured_span.as_secs_f64() * 1000.0,
            "latency": { "captured": latency(&self.captured_latency),
                         "replayed": latency(&self.replayed_latency) },
            "differences": self.kept,
        })
    }
}

/// A statement's text on one line, cut at 200 characters.
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// Latency percentiles in milliseconds.
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: &[Duration]) -> Option<Percentiles> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i].as_secs_f64() * 1000.0
        };
        (!sorted.is_empty()).then(|| Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_differences() {
        let http = |s| Outcome::Http {
            status: s,
            body_len: 3,
        };
        let mut r = Report::default();
        let ms = |n| Some(Duration::from_millis(n));
        r.add(
            Exchange::compare(1, "http", "GET /".into(), Some(http(200)), Ok(http(200))),
            (ms(1), ms(2)),
        );
        r.add(
            Exchange::compare(1, "http", "GET /x".into(), Some(http(200)), Ok(http(500))),
            (ms(3), ms(4)),
        );
        r.add(
            Exchange::compare(
                2,
                "http",
                "GET /y".into(),
                Some(http(200)),
                Err("refused".into()),
            ),
            (ms(5), None),
        );
        assert_eq!((r.total(), r.differences()), (3, 2));
        let v = r.to_json();
        assert_eq!(v["same"], 1);
        assert_eq!(v["differences"][0]["replayed"]["status"], 500);
        assert_eq!(v["differences"][1]["verdict"], "failed");
        assert_eq!(v["latency"]["captured"]["p50_ms"], 3.0);
        assert!(r.summary().contains("DIFFERENT [conn 1] GET /x"));
    }
}
