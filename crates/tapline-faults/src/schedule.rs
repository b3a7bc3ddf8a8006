//! When a fault is active: lueur/fault's interval syntax.
//!
//! A schedule is a list of periods, each `start:T` with an optional `duration:T` (or a lone
//! `duration:T`, starting at 0). Clauses are separated by `,` or `;`; a `duration` joins the
//! `start` before it. `T` is fixed (`500ms`, `30s`, `2m`, `1h`, `1d`, `1w`; a bare number is
//! seconds) or relative (`25%`, a fraction of the run's `--duration`, which must then be
//! given). A period without a duration lasts to the end of the run. Without a schedule a
//! fault is active for the whole run.
//!
//! `start:5%,duration:30%;start:90%,duration:5%` with `--duration 5m` is active from 15 s to
//! 105 s and from 270 s to 285 s.

use std::time::Duration;

use crate::FaultError;

/// A start or a length, as written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeSpec {
    Fixed(Duration),
    /// Fraction of the run's duration, 0..=1.
    Fraction(f64),
}

impl TimeSpec {
    fn parse(s: &str) -> Result<TimeSpec, FaultError> {
        let s = s.trim();
        if let Some(pct) = s.strip_suffix('%') {
            let v: f64 = pct
                .trim()
                .parse()
                .map_err(|_| FaultError::Invalid(format!("'{s}' is not a percentage")))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(FaultError::Invalid(format!("'{s}' is outside 0%..100%")));
            }
            return Ok(TimeSpec::Fraction(v / 100.0));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| FaultError::Invalid(format!("'{s}' is not a time (e.g. 30s, 5%)")))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86_400.0,
            "w" => n * 604_800.0,
            other => {
                return Err(FaultError::Invalid(format!(
                    "'{s}' has an unknown time unit '{other}' (ms, s, m, h, d, w or %)"
                )))
            }
        };
        Duration::try_from_secs_f64(secs)
            .map(TimeSpec::Fixed)
            .map_err(|_| FaultError::Invalid(format!("'{s}' is not a valid time")))
    }

    fn resolve(self, run: Option<Duration>) -> Result<Duration, FaultError> {
        match (self, run) {
            (TimeSpec::Fixed(d), _) => Ok(d),
            (TimeSpec::Fraction(f), Some(total)) => Ok(total.mul_f64(f)),
            (TimeSpec::Fraction(_), None) => Err(FaultError::Invalid(
                "a schedule in % needs --duration (percentages are of the run's duration)".into(),
            )),
        }
    }
}

/// One active period, relative to the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    start: Duration,
    /// `None`: to the end of the run.
    end: Option<Duration>,
}

/// When a fault is active, relative to the start of the run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Empty means always.
    periods: Vec<Period>,
}

impl Schedule {
    /// Active for the whole run.
    pub fn always() -> Self {
        Schedule::default()
    }

    /// Parses `spec`, resolving percentages against the run's `--duration`.
    pub fn parse(spec: &str, run: Option<Duration>) -> Result<Schedule, FaultError> {
        let mut raw: Vec<(Option<TimeSpec>, Option<TimeSpec>)> = Vec::new();
        for clause in spec.split([',', ';']) {
            let clause = clause.trim();
            if clause.is_empty() {
                continue;
            }
            let (key, value) = clause.split_once(':').ok_or_else(|| {
                FaultError::Invalid(format!("'{clause}' is not start:TIME or duration:TIME"))
            })?;
            let value = TimeSpec::parse(value)?;
            match key.trim().to_ascii_lowercase().as_str() {
                "start" => raw.push((Some(value), None)),
                "duration" => match raw.last_mut() {
                    Some((Some(_), d @ None)) => *d = Some(value),
                    _ => raw.push((None, Some(value))),
                },
                other => {
                    return Err(FaultError::Invalid(format!(
                        "unknown schedule key '{other}' (expected start or duration)"
                    )))
                }
            }
        }
        if raw.is_empty() {
            return Err(FaultError::Invalid(format!(
                "'{spec}' holds no period (e.g. start:10%,duration:30% or start:5s,duration:20s)"
            )));
        }
        let periods = raw
            .into_iter()
            .map(|(start, length)| {
                let start = match start {
                    Some(s) => s.resolve(run)?,
                    None => Duration::ZERO,
                };
                let end = match length {
                    Some(l) => Some(start + l.resolve(run)?),
                    None => None,
                };
                Ok(Period { start, end })
            })
            .collect::<Result<Vec<_>, FaultError>>()?;
        Ok(Schedule { periods })
    }

    /// Whether the fault is active `elapsed` after the start of the run.
    pub fn is_active(&self, elapsed: Duration) -> bool {
        self.periods.is_empty()
            || self
                .periods
                .iter()
                .any(|p| elapsed >= p.start && p.end.is_none_or(|end| elapsed < end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn relative_periods_scale_with_the_run() {
        let s = Schedule::parse(
            "start:5%,duration:30%;start:90%,duration:5%",
            Some(secs(300)),
        )
        .unwrap();
        assert!(!s.is_active(secs(14)));
        assert!(s.is_active(secs(15)));
        assert!(s.is_active(secs(104)));
        assert!(!s.is_active(secs(105)));
        assert!(s.is_active(secs(270)));
        assert!(!s.is_active(secs(285)));
    }

    #[test]
    fn semicolons_join_start_and_duration_as_lueur_writes_them() {
        let s = Schedule::parse("start:5%;duration:30%", Some(secs(100))).unwrap();
        assert!(s.is_active(secs(5)) && s.is_active(secs(34)) && !s.is_active(secs(35)));
    }

    #[test]
    fn fixed_open_ended_and_lone_duration_periods() {
        let s = Schedule::parse("start:5s,duration:20s", None).unwrap();
        assert!(!s.is_active(secs(4)) && s.is_active(secs(5)) && !s.is_active(secs(25)));
        let open = Schedule::parse("start:30s", None).unwrap();
        assert!(!open.is_active(secs(29)) && open.is_active(secs(10_000)));
        let first = Schedule::parse("duration:500ms", None).unwrap();
        assert!(first.is_active(Duration::from_millis(499)));
        assert!(!first.is_active(Duration::from_millis(500)));
        assert!(Schedule::always().is_active(secs(1)));
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(Schedule::parse("start:10%", None).is_err());
        assert!(Schedule::parse("start:150%", Some(secs(1))).is_err());
        assert!(Schedule::parse("begin:5s", None).is_err());
        assert!(Schedule::parse("start:5 fortnights", None).is_err());
        assert!(Schedule::parse("start:-5s", None).is_err());
        assert!(Schedule::parse(" ; ", None).is_err());
    }
}
