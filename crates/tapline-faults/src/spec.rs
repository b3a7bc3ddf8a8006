//! What a fault is: its kind and parameters, the traffic it targets, how often and when.

use std::time::Duration;

use bytes::Bytes;
use regex::{Regex, RegexBuilder};
use tapline_core::PgError;

use crate::bandwidth::Rate;
use crate::distribution::LatencyDistribution;
use crate::loss::LossModel;
use crate::schedule::Schedule;
use crate::target::Target;
use crate::FaultError;

/// The kinds of fault, each with its parameters.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Delay drawn from a distribution: once per HTTP request or per connection direction,
    /// or on every read/write.
    Latency {
        /// Where delays are drawn from.
        distribution: LatencyDistribution,
        /// Delay every chunk/message instead of once.
        per_read_write: bool,
    },
    /// A random delay in `0..=amplitude`, at most `frequency` times a second per flow and
    /// direction.
    Jitter {
        /// The largest delay.
        amplitude: Duration,
        /// How often a delay may apply, per second (0: never).
        frequency: f64,
    },
    /// Pace bytes to a rate with a token bucket per flow and direction.
    Bandwidth {
        /// The rate.
        rate: Rate,
    },
    /// Segment loss, recovered as TCP would (delay, never data loss).
    PacketLoss {
        /// Loss probability per segment.
        model: LossModel,
    },
    /// Accept, never forward.
    Blackhole,
    /// Answer HTTP requests with this status and body instead of forwarding them.
    HttpError {
        /// Status code.
        status: u16,
        /// Body (sent as `text/plain`).
        body: Bytes,
    },
    /// Answer matching PostgreSQL statements with this error; they never reach the server.
    SqlError(PgError),
    /// Delay matching PostgreSQL statements (their response time grows by the delay).
    SqlLatency(LatencyDistribution),
    /// Close the connection when a matching PostgreSQL statement arrives.
    SqlReset,
}

impl FaultKind {
    /// The stage name, as logs and stats show it.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Jitter { .. } => "jitter",
            FaultKind::Bandwidth { .. } => "bandwidth",
            FaultKind::PacketLoss { .. } => "packet-loss",
            FaultKind::Blackhole => "blackhole",
            FaultKind::HttpError { .. } => "http-error",
            FaultKind::SqlError(_) => "sql-error",
            FaultKind::SqlLatency(_) => "sql-latency",
            FaultKind::SqlReset => "sql-reset",
        }
    }

    /// True for the faults aimed at PostgreSQL statements (they need an [`Aim`]).
    pub fn is_sql(&self) -> bool {
        matches!(
            self,
            FaultKind::SqlError(_) | FaultKind::SqlLatency(_) | FaultKind::SqlReset
        )
    }
}

/// What a fault is aimed at: a regular expression, case-insensitive unless it says `(?-i)`,
/// searched in the SQL of a statement (`Query`; a `Bind` by the statement it was prepared
/// from) or in an HTTP request's `METHOD PATH` (`POST /api/orders?id=1`).
#[derive(Debug, Clone)]
pub struct Aim(Regex);

impl Aim {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Aim, FaultError> {
        RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map(Aim)
            .map_err(|e| FaultError::Invalid(format!("not a valid regular expression: {e}")))
    }

    /// Whether `text` holds a match.
    pub fn hits(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// One fault: what, where, how often, when.
#[derive(Debug, Clone)]
pub struct FaultSpec {
    /// What the fault does.
    pub kind: FaultKind,
    /// The leg and direction it applies to (HTTP errors ignore it).
    pub target: Target,
    /// Probability that it applies, each time it could (see the kind).
    pub probability: f64,
    /// When it is active.
    pub schedule: Schedule,
    /// The statements (SQL faults) or routes (HTTP faults) it applies to; `None`: all.
    pub aim: Option<Aim>,
}

/// Checks a SQLSTATE (five digits or capital letters).
pub fn sqlstate(code: &str) -> Result<String, FaultError> {
    if PgError::valid_code(code) {
        Ok(code.to_string())
    } else {
        Err(FaultError::Invalid(format!(
            "'{code}' is not a SQLSTATE (five digits or capital letters, e.g. 40001)"
        )))
    }
}

/// Checks that `p` is a probability (0..=1).
pub fn probability(p: f64) -> Result<f64, FaultError> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(FaultError::Invalid(format!(
            "{p} is not a probability (expected a number from 0 to 1)"
        )))
    }
}

/// Checks that `status` is an HTTP status code (100..=599).
pub fn http_status(status: u16) -> Result<u16, FaultError> {
    if (100..=599).contains(&status) {
        Ok(status)
    } else {
        Err(FaultError::Invalid(format!(
            "{status} is not an HTTP status code (100 to 599)"
        )))
    }
}

/// Checks a jitter frequency (Hz, non-negative).
pub fn frequency(hz: f64) -> Result<f64, FaultError> {
    if hz.is_finite() && hz >= 0.0 {
        Ok(hz)
    } else {
        Err(FaultError::Invalid(format!(
            "{hz} is not a frequency (expected a non-negative number of Hz)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_refused() {
        assert!(probability(1.5).is_err());
        assert!(probability(-0.1).is_err());
        assert!(probability(f64::NAN).is_err());
        assert_eq!(probability(0.25).unwrap(), 0.25);
        assert!(http_status(99).is_err());
        assert!(http_status(600).is_err());
        assert!(frequency(-1.0).is_err());
    }
}
