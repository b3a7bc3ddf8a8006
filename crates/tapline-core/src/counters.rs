//! [`StageCounters`]: what the dispatch counts for each stage (calls, time, failures,
//! verdicts observed but not applied), read by metrics and the end-of-run stats, and the
//! rate-limited warnings for failing hooks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stage::{Hook, HookFailure};

/// Upper bounds, in microseconds, of the call duration buckets of [`StageCounters`].
pub const LATENCY_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 2_000_000,
];

/// Warnings about failing hooks logged before the rate limit starts.
const FREE_WARNINGS: u64 = 5;
/// At most one warning per this interval afterwards.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Per-stage counters, shared with metrics and the end-of-run stats.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Hook calls made.
    pub calls: AtomicU64,
    /// Hook calls that failed (error, timeout, garbage answer) and fell back to the policy.
    pub errors: AtomicU64,
    /// Of those, calls that timed out.
    pub timeouts: AtomicU64,
    /// Calls not made because a queue was full or the stage was offline.
    pub dropped: AtomicU64,
    /// Non-pass verdicts seen where they are not applied (capture mode, HTTP sniffed inside
    /// a `tcp` mapping).
    pub ignored_verdicts: AtomicU64,
    /// Total time spent in calls, in microseconds.
    pub busy_micros: AtomicU64,
    /// Calls per duration bucket: `latency_buckets[i]` counts calls of at most
    /// [`LATENCY_BUCKETS_MICROS`]`[i]` µs (and more than the bound before); the last slot counts
    /// longer calls. Filled by [`StageCounters::record_call`].
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    warned_ignored: AtomicBool,
    warnings: Mutex<Warnings>,
}

/// How many failure warnings were logged, when the last was, and how many were held back.
#[derive(Debug, Default)]
struct Warnings {
    logged: u64,
    last: Option<Instant>,
    held_back: u64,
}

impl StageCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records one call that took `elapsed`: counts it, adds it to `busy_micros` and to its
    /// latency bucket (for the metrics histogram).
    pub fn record_call(&self, elapsed: Duration) {
        Self::bump(&self.calls);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.busy_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed call of `stage`'s `hook` and warns about it, with a rate limit (the
    /// first few, then one per interval saying how many were held back). `consequence` says
    /// what became of the event (`forwarding the original data`, `closing the flow`, …).
    pub fn failed(&self, stage: &str, hook: Hook, failure: &HookFailure, consequence: &str) {
        Self::bump(&self.errors);
        if failure.timed_out {
            Self::bump(&self.timeouts);
        }
        let Some(held_back) = self.warning_due() else {
            return;
        };
        let more = if held_back > 0 {
            format!(" ({held_back} similar failures not shown)")
        } else {
            String::new()
        };
        tracing::warn!("{stage}: {hook}: {}; {consequence}{more}", failure.message);
    }

    /// Counts a non-pass verdict that is observed, not applied; the first one of a stage is
    /// logged.
    pub fn ignored(&self, stage: &str, what: &str) {
        Self::bump(&self.ignored_verdicts);
        if !self.warned_ignored.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                plugin = stage,
                "{what} verdicts on this traffic are observed, not applied (counted from now on)"
            );
        }
    }

    /// Whether a warning may be logged now; if so, how many were held back since the last.
    fn warning_due(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        let due = w.logged < FREE_WARNINGS || w.last.is_none_or(|t| now - t >= WARN_EVERY);
        if !due {
            w.held_back += 1;
            return None;
        }
        w.logged += 1;
        w.last = Some(now);
        Some(std::mem::take(&mut w.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_call_fills_calls_busy_time_and_buckets() {
        let c = StageCounters::default();
        c.record_call(Duration::from_micros(50));
        c.record_call(Duration::from_micros(51));
        c.record_call(Duration::from_secs(10));
        assert_eq!(StageCounters::get(&c.calls), 3);
        assert_eq!(StageCounters::get(&c.busy_micros), 10_000_101);
        assert_eq!(StageCounters::get(&c.latency_buckets[0]), 1);
        assert_eq!(StageCounters::get(&c.latency_buckets[1]), 1);
        assert_eq!(StageCounters::get(&c.latency_buckets[12]), 1);
    }

    #[test]
    fn failures_are_counted_and_warnings_rate_limited() {
        let c = StageCounters::default();
        let slow = HookFailure {
            message: "slow".into(),
            timed_out: true,
        };
        for _ in 0..FREE_WARNINGS {
            assert_eq!(c.warning_due(), Some(0));
        }
        assert_eq!(c.warning_due(), None);
        assert_eq!(c.warning_due(), None);
        c.warnings.lock().unwrap().last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(
            c.warning_due(),
            Some(2),
            "the next one says how many were held back"
        );
        c.failed("p", Hook::Request, &slow, "forwarding the original data");
        assert_eq!(StageCounters::get(&c.errors), 1);
        assert_eq!(StageCounters::get(&c.timeouts), 1);
    }
}
