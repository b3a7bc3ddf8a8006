//! The end-of-run stats printed on stderr at a clean stop: events by kind, each stage's
//! counters, and the counters other parts of the run registered (syslog, capture drops).

use std::fmt::Write as _;

use tapline_core::{Pipeline, StageCounters};

use crate::metrics::Metrics;

/// The stats as lines, each starting with `tapline: `, e.g.
/// `tapline: ua-watch: calls 12, errors 0, timeouts 0, dropped 0, ignored verdicts 0`, then the
/// stage's own counts (a Lua plugin's `reloads 1, failed reloads 0`).
pub fn end_of_run(metrics: &Metrics, pipeline: &Pipeline) -> String {
    let mut out = String::from("tapline: events:");
    let mut any = false;
    for (kind, n) in metrics.event_counts().filter(|(_, n)| *n > 0) {
        let _ = write!(out, "{} {kind} {n}", if any { "," } else { "" });
        any = true;
    }
    if !any {
        out.push_str(" none");
    }
    out.push('\n');
    for stage in pipeline.stages() {
        let c = stage.counters();
        let _ = write!(
            out,
            "tapline: {}: calls {}, errors {}, timeouts {}, dropped {}, ignored verdicts {}",
            stage.name(),
            StageCounters::get(&c.calls),
            StageCounters::get(&c.errors),
            StageCounters::get(&c.timeouts),
            StageCounters::get(&c.dropped),
            StageCounters::get(&c.ignored_verdicts),
        );
        for (what, n) in stage.own_counts() {
            let _ = write!(out, ", {what} {n}");
        }
        out.push('\n');
    }
    for (what, n) in metrics.external_counts() {
        let _ = writeln!(out, "tapline: {what}: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tapline_core::{EventKind, EventSink, Interest, NullSink, Stage};

    use super::*;
    use crate::testing::*;

    struct Named(StageCounters);

    impl Stage for Named {
        fn name(&self) -> &str {
            "ua-watch"
        }
        fn family(&self) -> &'static str {
            "lua"
        }
        fn interest(&self, _flow: &tapline_core::Flow) -> Interest {
            Interest::ALL
        }
        fn counters(&self) -> &StageCounters {
            &self.0
        }
        fn own_counts(&self) -> Vec<(&'static str, u64)> {
            vec![("reloads", 2), ("failed reloads", 1)]
        }
    }

    #[test]
    fn lists_events_stages_and_registered_counters() {
        let metrics = Metrics::new();
        metrics.emit(&event(EventKind::FlowStart));
        metrics.emit(&event(EventKind::Alert(record())));
        metrics.register(
            "tapline_syslog_dropped_total",
            "Syslog messages dropped.",
            &[("target", "tcp://h:1")],
            || 3,
        );
        let stage = Named(StageCounters::default());
        StageCounters::bump(&stage.0.calls);
        StageCounters::bump(&stage.0.errors);
        let pipeline = Pipeline::new(vec![Arc::new(stage)], Arc::new(NullSink));
        assert_eq!(
            end_of_run(&metrics, &pipeline),
            "tapline: events: flow_start 1, alert 1\n\
             tapline: ua-watch: calls 1, errors 1, timeouts 0, dropped 0, ignored verdicts 0, reloads 2, failed reloads 1\n\
             tapline: Syslog messages dropped (tcp://h:1): 3\n"
        );
    }
}
