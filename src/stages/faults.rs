//! Built-in network fault stages from lueur-style flags (`--with-latency --latency-mean 300`,
//! …): each enabled fault becomes one stage, in a fixed order (latency, jitter, bandwidth,
//! packet loss, blackhole, HTTP error, then the SQL faults of `sql_faults`). Bad values are usage errors naming the flag.
//! Defaults are lueur/fault's; `docs/faults.md` describes them and the fault model.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tapline_core::Stage;
use tapline_faults::spec::{frequency, http_status, probability};
use tapline_faults::{
    Aim, Direction, DistributionName, DistributionParams, FaultError, FaultKind, FaultSpec,
    FaultStage, LatencyDistribution, Leg, LossModel, Rate, Schedule, Target,
};
use tokio::time::Instant;

use super::sql_faults;
use crate::cli::{parse_duration, FaultArgs};
use crate::exit::usage;

/// Loss probability per segment when `--packet-loss-probability` is not given.
const DEFAULT_PACKET_LOSS: f64 = 0.05;

/// The fault stages the flags ask for; schedules count from now, in `--duration` for `%`.
pub fn build(args: &FaultArgs, duration: Option<Duration>) -> anyhow::Result<Vec<Arc<dyn Stage>>> {
    let run_start = Instant::now();
    Ok(specs(args, duration)?
        .into_iter()
        .map(|spec| Arc::new(FaultStage::new(spec, run_start)) as Arc<dyn Stage>)
        .collect())
}

/// One fault's common flags: leg, direction, probability, schedule.
pub(super) struct Common<'a> {
    /// The fault's flag prefix, e.g. `latency`.
    name: &'a str,
    side: Option<&'a str>,
    direction: Option<&'a str>,
    default_direction: Direction,
    probability: Option<f64>,
    /// The probability flag's full name (`--http-response-trigger-probability`).
    probability_flag: String,
    schedule: Option<&'a str>,
}

impl Common<'_> {
    pub(super) fn spec(
        &self,
        kind: FaultKind,
        duration: Option<Duration>,
    ) -> anyhow::Result<FaultSpec> {
        let name = self.name;
        let leg = match self.side {
            Some(s) => flag(&format!("--{name}-side"), s.parse::<Leg>())?,
            None => Leg::Server,
        };
        let direction = match self.direction {
            Some(d) => flag(&format!("--{name}-direction"), d.parse::<Direction>())?,
            None => self.default_direction,
        };
        let probability = match self.probability {
            Some(p) => flag(&self.probability_flag, probability(p))?,
            None => 1.0,
        };
        let schedule = match self.schedule {
            Some(s) => flag(&format!("--{name}-sched"), Schedule::parse(s, duration))?,
            None => Schedule::always(),
        };
        Ok(FaultSpec {
            kind,
            target: Target::new(leg, direction),
            probability,
            schedule,
            aim: None,
        })
    }

    pub(super) fn new<'a>(
        name: &'a str,
        side: &'a Option<String>,
        direction: &'a Option<String>,
        default_direction: Direction,
        probability: Option<f64>,
        schedule: &'a Option<String>,
    ) -> Common<'a> {
        Common {
            name,
            side: side.as_deref(),
            direction: direction.as_deref(),
            default_direction,
            probability,
            probability_flag: format!("--{name}-probability"),
            schedule: schedule.as_deref(),
        }
    }
}

/// A fault library result as a usage error naming `flag`.
pub(super) fn flag<T>(flag: &str, result: Result<T, FaultError>) -> anyhow::Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => usage!("{flag}: {e}"),
    }
}

/// A time flag in milliseconds (a bare number is ms; `1.5s` works too).
pub(super) fn millis(flag: &str, value: &Option<String>) -> anyhow::Result<Option<f64>> {
    match value {
        None => Ok(None),
        Some(s) => match parse_duration(s) {
            Ok(d) => Ok(Some(d.as_secs_f64() * 1000.0)),
            Err(e) => usage!("{flag}: {e}"),
        },
    }
}

/// Warns about flags of a fault that is not enabled, which have no effect.
pub(super) fn warn_unused(enabled: bool, with: &str, given: &[(&str, bool)]) {
    if enabled {
        return;
    }
    for (name, set) in given {
        if *set {
            tracing::warn!("{name} has no effect without {with}");
        }
    }
}

/// The faults the flags enable, checked, in stage order.
fn specs(a: &FaultArgs, duration: Option<Duration>) -> anyhow::Result<Vec<FaultSpec>> {
    let mut out = Vec::new();
    warn_unused(
        a.with_latency,
        "--with-latency",
        &[
            ("--latency-mean", a.latency_mean.is_some()),
            ("--latency-distribution", a.latency_distribution.is_some()),
            ("--latency-min", a.latency_min.is_some()),
            ("--latency-max", a.latency_max.is_some()),
        ],
    );
    if a.with_latency {
        let mut spec = latency(a, duration)?;
        spec.aim = aim("--latency-match", &a.latency_match)?;
        out.push(spec);
    }
    warn_unused(
        a.with_jitter,
        "--with-jitter",
        &[("--jitter-amplitude", a.jitter_amplitude.is_some())],
    );
    if a.with_jitter {
        let common = Common::new(
            "jitter",
            &a.jitter_side,
            &a.jitter_direction,
            Direction::Ingress,
            a.jitter_probability,
            &a.jitter_sched,
        );
        let amplitude = millis("--jitter-amplitude", &a.jitter_amplitude)?.unwrap_or(20.0);
        let frequency = flag(
            "--jitter-frequency",
            frequency(a.jitter_frequency.unwrap_or(5.0)),
        )?;
        let kind = FaultKind::Jitter {
            amplitude: Duration::from_secs_f64(amplitude / 1000.0),
            frequency,
        };
        out.push(common.spec(kind, duration)?);
    }
    warn_unused(
        a.with_bandwidth,
        "--with-bandwidth",
        &[("--bandwidth-rate", a.bandwidth_rate.is_some())],
    );
    if a.with_bandwidth {
        let common = Common::new(
            "bandwidth",
            &a.bandwidth_side,
            &a.bandwidth_direction,
            Direction::Ingress,
            a.bandwidth_probability,
            &a.bandwidth_sched,
        );
        let unit = a.bandwidth_unit.as_deref().unwrap_or("Bps");
        flag("--bandwidth-unit", Rate::new(1.0, unit))?;
        let rate = flag(
            "--bandwidth-rate",
            Rate::new(a.bandwidth_rate.unwrap_or(1000.0), unit),
        )?;
        out.push(common.spec(FaultKind::Bandwidth { rate }, duration)?);
    }
    warn_unused(
        a.with_packet_loss,
        "--with-packet-loss",
        &[(
            "--packet-loss-probability",
            a.packet_loss_probability.is_some(),
        )],
    );
    if a.with_packet_loss {
        let p = flag(
            "--packet-loss-probability",
            probability(a.packet_loss_probability.unwrap_or(DEFAULT_PACKET_LOSS)),
        )?;
        // The probability is the loss rate per segment, not a gate on the fault.
        let common = Common::new(
            "packet-loss",
            &a.packet_loss_side,
            &a.packet_loss_direction,
            Direction::Ingress,
            None,
            &a.packet_loss_sched,
        );
        let kind = FaultKind::PacketLoss {
            model: LossModel::new(p),
        };
        out.push(common.spec(kind, duration)?);
    }
    if a.with_blackhole {
        let common = Common::new(
            "blackhole",
            &a.blackhole_side,
            &a.blackhole_direction,
            Direction::Ingress,
            a.blackhole_probability,
            &a.blackhole_sched,
        );
        let mut spec = common.spec(FaultKind::Blackhole, duration)?;
        spec.aim = aim("--blackhole-match", &a.blackhole_match)?;
        out.push(spec);
    }
    warn_unused(
        a.with_http_response,
        "--with-http-response",
        &[("--http-response-status", a.http_response_status.is_some())],
    );
    if a.with_http_response {
        let mut common = Common::new(
            "http-response",
            &None,
            &None,
            Direction::Ingress,
            a.http_response_trigger_probability,
            &a.http_response_sched,
        );
        common.probability_flag = "--http-response-trigger-probability".into();
        let status = flag(
            "--http-response-status",
            http_status(a.http_response_status.unwrap_or(500)),
        )?;
        let body = Bytes::from(a.http_response_body.clone().unwrap_or_default());
        let mut spec = common.spec(FaultKind::HttpError { status, body }, duration)?;
        spec.aim = aim("--http-response-match", &a.http_response_match)?;
        out.push(spec);
    }
    out.extend(sql_faults::specs(a, duration)?);
    Ok(out)
}

/// The aim a `--…-match REGEX` flag gives, checked.
pub(super) fn aim(name: &str, pattern: &Option<String>) -> anyhow::Result<Option<Aim>> {
    pattern
        .as_deref()
        .map(|p| flag(name, Aim::new(p)))
        .transpose()
}

fn latency(a: &FaultArgs, duration: Option<Duration>) -> anyhow::Result<FaultSpec> {
    let common = Common::new(
        "latency",
        &a.latency_side,
        &a.latency_direction,
        Direction::Both,
        a.latency_probability,
        &a.latency_sched,
    );
    let params = DistributionParams {
        mean: millis("--latency-mean", &a.latency_mean)?,
        stddev: millis("--latency-stddev", &a.latency_stddev)?,
        shape: a.latency_shape,
        scale: a.latency_scale,
        min: millis("--latency-min", &a.latency_min)?,
        max: millis("--latency-max", &a.latency_max)?,
    };
    let name = match &a.latency_distribution {
        Some(n) => flag("--latency-distribution", n.parse::<DistributionName>())?,
        None => DistributionName::Normal,
    };
    let distribution = flag(
        "--with-latency",
        LatencyDistribution::from_params(name, params),
    )?;
    let unused: &[(&str, bool)] = match distribution {
        LatencyDistribution::Normal { .. } => &[
            ("--latency-min", params.min.is_some()),
            ("--latency-max", params.max.is_some()),
            ("--latency-shape", params.shape.is_some()),
            ("--latency-scale", params.scale.is_some()),
        ],
        LatencyDistribution::Uniform { .. } => &[
            ("--latency-mean", params.mean.is_some()),
            ("--latency-stddev", params.stddev.is_some()),
            ("--latency-shape", params.shape.is_some()),
            ("--latency-scale", params.scale.is_some()),
        ],
        LatencyDistribution::Pareto { .. } => &[
            ("--latency-mean", params.mean.is_some()),
            ("--latency-stddev", params.stddev.is_some()),
            ("--latency-min", params.min.is_some()),
            ("--latency-max", params.max.is_some()),
        ],
        LatencyDistribution::ParetoNormal { .. } => &[
            ("--latency-min", params.min.is_some()),
            ("--latency-max", params.max.is_some()),
        ],
    };
    for (flag, set) in unused {
        if *set {
            tracing::warn!("{flag} is not used by the {name:?} latency distribution");
        }
    }
    let kind = FaultKind::Latency {
        distribution,
        per_read_write: a.latency_per_read_write,
    };
    common.spec(kind, duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_line(args: FaultArgs, duration: Option<Duration>) -> String {
        let err = specs(&args, duration).expect_err("a usage error");
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        err.to_string()
    }

    #[test]
    fn lueur_defaults_apply() {
        let args = FaultArgs {
            with_latency: true,
            latency_mean: Some("300".into()),
            with_bandwidth: true,
            with_http_response: true,
            ..Default::default()
        };
        let specs = specs(&args, None).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].target, Target::new(Leg::Server, Direction::Both));
        assert_eq!(
            specs[1].target,
            Target::new(Leg::Server, Direction::Ingress)
        );
        assert!(
            matches!(specs[1].kind, FaultKind::Bandwidth { rate } if rate.bytes_per_sec() == 1000.0)
        );
        assert!(matches!(
            specs[2].kind,
            FaultKind::HttpError { status: 500, .. }
        ));
        assert_eq!(specs[2].probability, 1.0);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let latency = |f: fn(&mut FaultArgs)| {
            let mut a = FaultArgs {
                with_latency: true,
                latency_mean: Some("300".into()),
                ..Default::default()
            };
            f(&mut a);
            a
        };
        let cases: Vec<(FaultArgs, &str)> = vec![
            (
                latency(|a| a.latency_mean = Some("-5".into())),
                "--latency-mean",
            ),
            (
                latency(|a| a.latency_side = Some("upstream".into())),
                "--latency-side",
            ),
            (
                latency(|a| a.latency_direction = Some("up".into())),
                "--latency-direction",
            ),
            (
                latency(|a| a.latency_distribution = Some("gamma".into())),
                "--latency-distribution",
            ),
            (
                latency(|a| a.latency_probability = Some(1.5)),
                "--latency-probability",
            ),
            (
                latency(|a| a.latency_sched = Some("start:10%".into())),
                "--latency-sched",
            ),
            (latency(|a| a.latency_mean = None), "--latency-mean"),
            (
                FaultArgs {
                    with_bandwidth: true,
                    bandwidth_unit: Some("Mbit".into()),
                    ..Default::default()
                },
                "--bandwidth-unit",
            ),
            (
                FaultArgs {
                    with_bandwidth: true,
                    bandwidth_rate: Some(-1.0),
                    ..Default::default()
                },
                "--bandwidth-rate",
            ),
            (
                FaultArgs {
                    with_http_response: true,
                    http_response_trigger_probability: Some(2.0),
                    ..Default::default()
                },
                "--http-response-trigger-probability",
            ),
            (
                FaultArgs {
                    with_packet_loss: true,
                    packet_loss_probability: Some(-0.1),
                    ..Default::default()
                },
                "--packet-loss-probability",
            ),
        ];
        for (args, flag) in cases {
            let line = usage_line(args, None);
            assert!(line.contains(flag), "{line:?} does not name {flag}");
        }
    }

    #[test]
    fn relative_schedules_resolve_against_the_duration() {
        let args = FaultArgs {
            with_blackhole: true,
            blackhole_sched: Some("start:10%,duration:30%".into()),
            ..Default::default()
        };
        let specs = specs(&args, Some(Duration::from_secs(100))).unwrap();
        assert!(!specs[0].schedule.is_active(Duration::from_secs(9)));
        assert!(specs[0].schedule.is_active(Duration::from_secs(10)));
        assert!(!specs[0].schedule.is_active(Duration::from_secs(40)));
    }
}
