//! Packet loss on a byte stream, modelled as the delay TCP takes to recover.
//!
//! The proxy carries TCP streams, where a lost segment is never a hole in the data: the
//! sender retransmits it after a retransmission timeout (RTO), and everything behind it
//! waits (head-of-line blocking). So tapline never drops or alters stream bytes; it delays
//! them as the recovery would:
//!
//! - the bytes are cut into segments of [`MSS`] bytes (at least one per chunk or message);
//! - each segment is lost with probability `p`; a lost segment costs one RTO, starting at
//!   [`INITIAL_RTO`] (Linux's minimum) and doubling for each further loss of the same
//!   segment (its retransmissions are lost with the same `p`), as TCP backs off;
//! - after [`MAX_RETRIES`] retransmissions of one segment TCP gives up and the connection is
//!   closed, as a real stack would abort it.
//!
//! Fast retransmit (three duplicate ACKs) would recover some losses faster in a busy
//! stream; this model takes the timeout path every time, the worst case an application sees.

use std::time::Duration;

use rand::Rng;

/// Bytes per segment (Ethernet MSS).
pub const MSS: usize = 1460;
/// The first retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(200);
/// The largest retransmission timeout (RTO backoff stops doubling there).
pub const MAX_RTO: Duration = Duration::from_secs(120);
/// Retransmissions of one segment before the connection is given up (Linux tcp_retries2).
pub const MAX_RETRIES: u32 = 15;

/// What losing some of a chunk's segments costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Delivered after this extra delay (zero when nothing was lost).
    Delayed(Duration),
    /// A segment was lost [`MAX_RETRIES`] times: the connection is aborted (after `Duration`).
    GaveUp(Duration),
}

/// Segment loss with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossModel {
    p: f64,
}

impl LossModel {
    /// Loss probability `p` per segment, already checked to be within 0..=1.
    pub fn new(p: f64) -> Self {
        LossModel { p }
    }

    /// The recovery delay for `len` bytes.
    pub fn recover<R: Rng + ?Sized>(&self, len: usize, rng: &mut R) -> Recovery {
        let segments = len.div_ceil(MSS).max(1);
        let mut delay = Duration::ZERO;
        for _ in 0..segments {
            let mut rto = INITIAL_RTO;
            let mut retries = 0;
            while rng.random_bool(self.p) {
                delay = delay.saturating_add(rto);
                retries += 1;
                if retries >= MAX_RETRIES {
                    return Recovery::GaveUp(delay);
                }
                rto = (rto * 2).min(MAX_RTO);
            }
        }
        Recovery::Delayed(delay)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn no_loss_costs_nothing_and_certain_loss_gives_up() {
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(
            LossModel::new(0.0).recover(100_000, &mut rng),
            Recovery::Delayed(Duration::ZERO)
        );
        assert!(matches!(
            LossModel::new(1.0).recover(1, &mut rng),
            Recovery::GaveUp(_)
        ));
    }

    #[test]
    fn mean_delay_per_segment_follows_the_backoff() {
        // One segment, p = 0.1: E[delay] = sum_k p^k * 200ms * 2^(k-1) = 200ms * p / (1 - 2p)
        // = 25 ms.
        let model = LossModel::new(0.1);
        let mut rng = SmallRng::seed_from_u64(11);
        let n = 100_000;
        let total: f64 = (0..n)
            .map(|_| match model.recover(MSS, &mut rng) {
                Recovery::Delayed(d) | Recovery::GaveUp(d) => d.as_secs_f64(),
            })
            .sum();
        let mean_ms = total / n as f64 * 1000.0;
        assert!((mean_ms - 25.0).abs() < 1.5, "{mean_ms}");
    }
}
