//! Bandwidth: a rate with lueur/fault's units and a token bucket that paces bytes to it.

use std::time::Duration;

use tokio::time::Instant;

use crate::FaultError;

/// How much the bucket may hold, as time at the rate: bytes that arrive after a pause go
/// through at once up to this much, then are paced.
const BURST: Duration = Duration::from_millis(50);

/// A byte rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    bytes_per_sec: f64,
}

impl Rate {
    /// `rate` in `unit` per second; units are `Bps`, `KBps`, `MBps`, `GBps` (bytes, decimal
    /// multiples: 1 KBps = 1000 bytes/s), case-insensitive.
    pub fn new(rate: f64, unit: &str) -> Result<Rate, FaultError> {
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "bps" => 1.0,
            "kbps" => 1e3,
            "mbps" => 1e6,
            "gbps" => 1e9,
            _ => {
                return Err(FaultError::Invalid(format!(
                    "unknown bandwidth unit '{unit}' (expected Bps, KBps, MBps or GBps)"
                )))
            }
        };
        if !(rate.is_finite() && rate > 0.0) {
            return Err(FaultError::Invalid(format!(
                "the bandwidth rate must be a positive number, not {rate}"
            )));
        }
        Ok(Rate {
            bytes_per_sec: rate * mult,
        })
    }

    /// Bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes_per_sec
    }
}

/// A token bucket for one flow and direction: taking `n` bytes says how long to wait before
/// forwarding them so that the long-run rate stays at [`Rate`].
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    /// May go negative: bytes forwarded ahead of the rate, paid for by the caller's wait.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate`, as of `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        let capacity = (rate.bytes_per_sec * BURST.as_secs_f64()).max(1.0);
        TokenBucket {
            rate: rate.bytes_per_sec,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `n` bytes at `now`; returns how long to wait before forwarding them.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_decimal_bytes_and_unknown_ones_refused() {
        assert_eq!(Rate::new(2.0, "KBps").unwrap().bytes_per_sec(), 2000.0);
        assert_eq!(Rate::new(1.0, "mbps").unwrap().bytes_per_sec(), 1e6);
        assert!(Rate::new(1.0, "Mbit").is_err());
        assert!(Rate::new(-1.0, "Bps").is_err());
        assert!(Rate::new(0.0, "Bps").is_err());
    }

    #[test]
    fn paced_bytes_take_their_time_at_the_rate() {
        let rate = Rate::new(1.0, "MBps").unwrap();
        let mut now = Instant::now();
        let mut bucket = TokenBucket::new(rate, now);
        let mut waited = Duration::ZERO;
        // 2 MB in 64 KiB chunks, each forwarded after its wait.
        let mut left = 2_000_000usize;
        while left > 0 {
            let n = left.min(65_536);
            let wait = bucket.take(n, now);
            waited += wait;
            now += wait;
            left -= n;
        }
        let secs = waited.as_secs_f64();
        assert!((1.9..=2.0).contains(&secs), "{secs}");
    }
}
