//! Latency distributions, with lueur/fault's names and parameters (milliseconds).

use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Normal, Pareto};

use crate::FaultError;

/// How many times a normal draw below zero is redrawn before it counts as zero.
const REDRAWS: usize = 64;

/// A latency distribution. Parameters are in milliseconds.
#[derive(Debug, Clone, Copy)]
pub enum LatencyDistribution {
    /// Normal around `mean` with `stddev`; negative draws are redrawn (a truncated normal).
    Normal {
        /// Mean, ms.
        mean: f64,
        /// Standard deviation, ms.
        stddev: f64,
    },
    /// Uniform between `min` and `max` inclusive.
    Uniform {
        /// Smallest delay, ms.
        min: f64,
        /// Largest delay, ms.
        max: f64,
    },
    /// Pareto with `scale` (the smallest delay, ms) and `shape` (lower: heavier tail).
    Pareto {
        /// Tail index.
        shape: f64,
        /// Smallest delay, ms.
        scale: f64,
    },
    /// A normal baseline plus a Pareto tail: the sum of one draw of each.
    ParetoNormal {
        /// Mean of the normal part, ms.
        mean: f64,
        /// Standard deviation of the normal part, ms.
        stddev: f64,
        /// Tail index of the Pareto part.
        shape: f64,
        /// Smallest delay of the Pareto part, ms.
        scale: f64,
    },
}

/// The distribution's parameters as given on the command line (ms); unused ones are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct DistributionParams {
    /// `--latency-mean`.
    pub mean: Option<f64>,
    /// `--latency-stddev`.
    pub stddev: Option<f64>,
    /// `--latency-shape`.
    pub shape: Option<f64>,
    /// `--latency-scale`.
    pub scale: Option<f64>,
    /// `--latency-min`.
    pub min: Option<f64>,
    /// `--latency-max`.
    pub max: Option<f64>,
}

fn need(value: Option<f64>, what: &str, dist: &str) -> Result<f64, FaultError> {
    value.ok_or_else(|| FaultError::Invalid(format!("the {dist} distribution needs {what}")))
}

fn non_negative(value: f64, what: &str) -> Result<f64, FaultError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(FaultError::Invalid(format!(
            "{what} must be a non-negative number, not {value}"
        )))
    }
}

fn positive(value: f64, what: &str) -> Result<f64, FaultError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(FaultError::Invalid(format!(
            "{what} must be a positive number, not {value}"
        )))
    }
}

/// The distributions by name, as `--latency-distribution` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributionName {
    /// `normal`.
    Normal,
    /// `uniform`.
    Uniform,
    /// `pareto`.
    Pareto,
    /// `pareto_normal` (or `pareto-normal`).
    ParetoNormal,
}

impl FromStr for DistributionName {
    type Err = FaultError;
    fn from_str(s: &str) -> Result<Self, FaultError> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "normal" => Ok(DistributionName::Normal),
            "uniform" => Ok(DistributionName::Uniform),
            "pareto" => Ok(DistributionName::Pareto),
            "pareto_normal" => Ok(DistributionName::ParetoNormal),
            _ => Err(FaultError::Invalid(format!(
                "unknown distribution '{s}' (expected normal, uniform, pareto or pareto_normal)"
            ))),
        }
    }
}

impl LatencyDistribution {
    /// Builds the distribution `name` from `params`, checking what it needs.
    pub fn from_params(name: DistributionName, p: DistributionParams) -> Result<Self, FaultError> {
        let normal = |dist: &str| -> Result<(f64, f64), FaultError> {
            let mean = non_negative(need(p.mean, "--latency-mean", dist)?, "--latency-mean")?;
            let stddev = non_negative(p.stddev.unwrap_or(0.0), "--latency-stddev")?;
            Ok((mean, stddev))
        };
        let pareto = |dist: &str| -> Result<(f64, f64), FaultError> {
            let shape = positive(need(p.shape, "--latency-shape", dist)?, "--latency-shape")?;
            let scale = positive(need(p.scale, "--latency-scale", dist)?, "--latency-scale")?;
            Ok((shape, scale))
        };
        match name {
            DistributionName::Normal => {
                let (mean, stddev) = normal("normal")?;
                Ok(LatencyDistribution::Normal { mean, stddev })
            }
            DistributionName::Uniform => {
                let min = non_negative(need(p.min, "--latency-min", "uniform")?, "--latency-min")?;
                let max = non_negative(need(p.max, "--latency-max", "uniform")?, "--latency-max")?;
                if min > max {
                    return Err(FaultError::Invalid(format!(
                        "--latency-min ({min}) is above --latency-max ({max})"
                    )));
                }
                Ok(LatencyDistribution::Uniform { min, max })
            }
            DistributionName::Pareto => {
                let (shape, scale) = pareto("pareto")?;
                Ok(LatencyDistribution::Pareto { shape, scale })
            }
            DistributionName::ParetoNormal => {
                let (mean, stddev) = normal("pareto_normal")?;
                let (shape, scale) = pareto("pareto_normal")?;
                Ok(LatencyDistribution::ParetoNormal {
                    mean,
                    stddev,
                    shape,
                    scale,
                })
            }
        }
    }

    /// One delay.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let ms = match *self {
            LatencyDistribution::Normal { mean, stddev } => truncated_normal(rng, mean, stddev),
            LatencyDistribution::Uniform { min, max } => rng.random_range(min..=max),
            LatencyDistribution::Pareto { shape, scale } => pareto(rng, shape, scale),
            LatencyDistribution::ParetoNormal {
                mean,
                stddev,
                shape,
                scale,
            } => truncated_normal(rng, mean, stddev) + pareto(rng, shape, scale),
        };
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
    }
}

fn truncated_normal<R: Rng + ?Sized>(rng: &mut R, mean: f64, stddev: f64) -> f64 {
    // Parameters were checked (finite, stddev >= 0), so construction cannot fail.
    let Ok(normal) = Normal::new(mean, stddev) else {
        return mean;
    };
    (0..REDRAWS)
        .map(|_| normal.sample(rng))
        .find(|v| *v >= 0.0)
        .unwrap_or(0.0)
}

fn pareto<R: Rng + ?Sized>(rng: &mut R, shape: f64, scale: f64) -> f64 {
    // Parameters were checked (both positive), so construction cannot fail.
    Pareto::new(scale, shape).map_or(scale, |p| p.sample(rng))
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn params() -> DistributionParams {
        DistributionParams::default()
    }

    fn mean_ms(d: &LatencyDistribution, n: usize) -> f64 {
        let mut rng = SmallRng::seed_from_u64(7);
        (0..n)
            .map(|_| d.sample(&mut rng).as_secs_f64() * 1000.0)
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn each_distribution_has_its_documented_mean() {
        let normal = LatencyDistribution::from_params(
            DistributionName::Normal,
            DistributionParams {
                mean: Some(300.0),
                stddev: Some(20.0),
                ..params()
            },
        )
        .unwrap();
        assert!((mean_ms(&normal, 20_000) - 300.0).abs() < 1.0);
        let uniform = LatencyDistribution::from_params(
            DistributionName::Uniform,
            DistributionParams {
                min: Some(10.0),
                max: Some(30.0),
                ..params()
            },
        )
        .unwrap();
        assert!((mean_ms(&uniform, 20_000) - 20.0).abs() < 0.5);
        // Pareto mean: shape * scale / (shape - 1) = 3 * 10 / 2 = 15.
        let pareto = LatencyDistribution::from_params(
            DistributionName::Pareto,
            DistributionParams {
                shape: Some(3.0),
                scale: Some(10.0),
                ..params()
            },
        )
        .unwrap();
        assert!((mean_ms(&pareto, 50_000) - 15.0).abs() < 0.5);
        let both = LatencyDistribution::from_params(
            "pareto-normal".parse().unwrap(),
            DistributionParams {
                mean: Some(20.0),
                stddev: Some(2.0),
                shape: Some(3.0),
                scale: Some(10.0),
                ..params()
            },
        )
        .unwrap();
        assert!((mean_ms(&both, 50_000) - 35.0).abs() < 0.7);
    }

    #[test]
    fn missing_or_bad_parameters_are_refused() {
        assert!(LatencyDistribution::from_params(DistributionName::Normal, params()).is_err());
        assert!("gamma".parse::<DistributionName>().is_err());
        let bad_range = DistributionParams {
            min: Some(30.0),
            max: Some(10.0),
            ..params()
        };
        assert!(LatencyDistribution::from_params(DistributionName::Uniform, bad_range).is_err());
        let zero_shape = DistributionParams {
            shape: Some(0.0),
            scale: Some(1.0),
            ..params()
        };
        assert!(LatencyDistribution::from_params(DistributionName::Pareto, zero_shape).is_err());
        let negative = DistributionParams {
            mean: Some(-1.0),
            ..params()
        };
        assert!(LatencyDistribution::from_params(DistributionName::Normal, negative).is_err());
    }

    #[test]
    fn normal_draws_are_never_negative() {
        let d = LatencyDistribution::Normal {
            mean: 1.0,
            stddev: 50.0,
        };
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..10_000).all(|_| d.sample(&mut rng) >= Duration::ZERO));
    }
}
