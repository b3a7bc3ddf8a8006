//! tapline's built-in faults, as pipeline stages: latency (fixed or drawn from a
//! distribution), jitter, bandwidth, packet loss (as TCP recovery delay), blackhole and HTTP
//! errors, each on a leg and direction, with a probability and a schedule; HTTP faults may be
//! aimed at routes, and SQL errors, latency and resets at chosen statements. Names, defaults and
//! units follow lueur/fault so that its users' command lines carry over; `docs/faults.md`
//! describes the model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bandwidth;
pub mod distribution;
pub mod loss;
pub mod schedule;
pub mod spec;
pub mod stage;
pub mod target;

pub use bandwidth::{Rate, TokenBucket};
pub use distribution::{DistributionName, DistributionParams, LatencyDistribution};
pub use loss::{LossModel, Recovery};
pub use schedule::Schedule;
pub use spec::{Aim, FaultKind, FaultSpec};
pub use stage::FaultStage;
pub use target::{Direction, Leg, Target};

/// A fault's parameters are not valid; the message says which value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// A value is out of range, unknown, or missing.
    #[error("{0}")]
    Invalid(String),
}
