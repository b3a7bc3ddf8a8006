//! SQL faults: which PostgreSQL messages they apply to and what they do to them.

use std::time::Duration;

use tapline_core::{Flow, Message, PgError, Side};

use super::FaultStage;
use crate::spec::FaultKind;

/// What a SQL fault decided for one message.
pub(super) enum SqlAction {
    Pass,
    Delay(Duration),
    Fail(PgError),
    Reset,
}

/// The messages a SQL fault looks at: a client's `Query` (a simple statement) and `Bind` (an
/// execution of a prepared one).
pub(super) fn judges(from: Side, type_name: &str) -> bool {
    from == Side::Client && matches!(type_name, "Query" | "Bind")
}

impl FaultStage {
    /// The decision for a decoded message: a client's `Query`, or a `Bind` (an execution
    /// of a prepared statement, matched by the SQL it was prepared from), whose SQL the aim
    /// matches, while the fault is active and its coin says so. Other messages pass: a
    /// `Parse` only prepares (failing it would leave the statement unprepared for every
    /// later execution).
    pub(super) fn decide_message(&self, flow: &Flow, message: &Message) -> SqlAction {
        if !self.spec.kind.is_sql()
            || !judges(message.from, &message.type_name)
            || flow.mode != tapline_core::Mode::Proxy
        {
            return SqlAction::Pass;
        }
        let Some(sql) = message.fields.get("sql").and_then(|v| v.as_str()) else {
            return SqlAction::Pass;
        };
        let aimed = self.spec.aim.as_ref().is_none_or(|aim| aim.hits(sql));
        if !aimed || !self.active() || !self.coin() {
            return SqlAction::Pass;
        }
        match &self.spec.kind {
            FaultKind::SqlError(error) => SqlAction::Fail(error.clone()),
            FaultKind::SqlLatency(distribution) => {
                SqlAction::Delay(distribution.sample(&mut *self.rng.lock()))
            }
            FaultKind::SqlReset => SqlAction::Reset,
            _ => SqlAction::Pass,
        }
    }
}
