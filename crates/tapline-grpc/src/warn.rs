//! Rate-limited warnings for failed plugin calls: a misbehaving plugin must not flood stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one plugin may warn about failed calls.
const EVERY: Duration = Duration::from_secs(5);

/// Lets one warning through per period and counts the ones held back.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// Calls `warn` with the number of warnings held back since the last one, or holds this
    /// one back too.
    pub(crate) fn warn(&self, warn: impl FnOnce(u64)) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last.try_lock() else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if last.is_some_and(|t| now.duration_since(t) < EVERY) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *last = Some(now);
        }
        warn(self.suppressed.swap(0, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period_with_the_count_held_back() {
        let limiter = WarnLimiter::default();
        let mut seen = Vec::new();
        for _ in 0..5 {
            limiter.warn(|held| seen.push(held));
        }
        assert_eq!(seen, [0]);
        *limiter.last.lock().unwrap() = Some(Instant::now() - EVERY);
        limiter.warn(|held| seen.push(held));
        assert_eq!(seen, [0, 4]);
    }
}
