//! SQL faults from their flags (`--with-sql-error --sql-error-code 40001 --sql-error-match
//! '^update orders'`, `--with-sql-latency …`, `--with-sql-reset …`): each one a fault stage
//! aimed at the statements its regular expression matches. Bad values are usage errors
//! naming the flag.

use std::time::Duration;

use tapline_core::PgError;
use tapline_faults::spec::sqlstate;
use tapline_faults::{
    Direction, DistributionName, DistributionParams, FaultKind, FaultSpec, LatencyDistribution,
};

use super::faults::{aim, flag, millis, warn_unused, Common};
use crate::cli::FaultArgs;
use crate::exit::usage;

/// The SQL faults the flags enable, checked, in stage order (error, latency, reset).
pub(super) fn specs(a: &FaultArgs, duration: Option<Duration>) -> anyhow::Result<Vec<FaultSpec>> {
    let mut out = Vec::new();
    warn_unused(
        a.with_sql_error,
        "--with-sql-error",
        &[
            ("--sql-error-code", a.sql_error_code.is_some()),
            ("--sql-error-match", a.sql_error_match.is_some()),
        ],
    );
    if a.with_sql_error {
        let Some(code) = &a.sql_error_code else {
            usage!("--with-sql-error needs --sql-error-code SQLSTATE (e.g. 40001)");
        };
        let code = flag("--sql-error-code", sqlstate(code))?;
        let message = a
            .sql_error_message
            .clone()
            .unwrap_or_else(|| format!("tapline: injected error {code}"));
        let error = PgError {
            severity: "ERROR".into(),
            code,
            message,
        };
        let common = common("sql-error", a.sql_error_probability, &a.sql_error_sched);
        out.push(aimed(
            common.spec(FaultKind::SqlError(error), duration)?,
            "sql-error",
            &a.sql_error_match,
        )?);
    }
    warn_unused(
        a.with_sql_latency,
        "--with-sql-latency",
        &[
            ("--sql-latency-mean", a.sql_latency_mean.is_some()),
            ("--sql-latency-match", a.sql_latency_match.is_some()),
        ],
    );
    if a.with_sql_latency {
        let params = DistributionParams {
            mean: millis("--sql-latency-mean", &a.sql_latency_mean)?,
            stddev: millis("--sql-latency-stddev", &a.sql_latency_stddev)?,
            ..DistributionParams::default()
        };
        let distribution = flag(
            "--sql-latency-mean",
            LatencyDistribution::from_params(DistributionName::Normal, params),
        )?;
        let common = common(
            "sql-latency",
            a.sql_latency_probability,
            &a.sql_latency_sched,
        );
        let spec = common.spec(FaultKind::SqlLatency(distribution), duration)?;
        out.push(aimed(spec, "sql-latency", &a.sql_latency_match)?);
    }
    warn_unused(
        a.with_sql_reset,
        "--with-sql-reset",
        &[("--sql-reset-match", a.sql_reset_match.is_some())],
    );
    if a.with_sql_reset {
        let common = common("sql-reset", a.sql_reset_probability, &a.sql_reset_sched);
        let spec = common.spec(FaultKind::SqlReset, duration)?;
        out.push(aimed(spec, "sql-reset", &a.sql_reset_match)?);
    }
    Ok(out)
}

/// A SQL fault's probability and schedule (it has no leg or direction: it acts on the
/// client's statements).
fn common<'a>(name: &'a str, probability: Option<f64>, schedule: &'a Option<String>) -> Common<'a> {
    Common::new(
        name,
        &None,
        &None,
        Direction::Ingress,
        probability,
        schedule,
    )
}

/// `spec` aimed at the statements `--NAME-match` matches (required: a SQL fault that hit
/// every statement would be a plain outage, which `--with-blackhole` already is).
fn aimed(mut spec: FaultSpec, name: &str, pattern: &Option<String>) -> anyhow::Result<FaultSpec> {
    let flag_name = format!("--{name}-match");
    if pattern.is_none() {
        usage!("--with-{name} needs {flag_name} REGEX (the statements to aim at; '.' for all)");
    }
    spec.aim = aim(&flag_name, pattern)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_line(args: FaultArgs) -> String {
        let err = specs(&args, None).expect_err("a usage error");
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        err.to_string()
    }

    fn sql_error(f: fn(&mut FaultArgs)) -> FaultArgs {
        let mut a = FaultArgs {
            with_sql_error: true,
            sql_error_code: Some("40001".into()),
            sql_error_match: Some("^update orders".into()),
            ..Default::default()
        };
        f(&mut a);
        a
    }

    #[test]
    fn sql_faults_are_aimed_and_checked() {
        let specs = specs(&sql_error(|_| {}), None).unwrap();
        assert!(matches!(&specs[0].kind, FaultKind::SqlError(e) if e.code == "40001"));
        let aim = specs[0].aim.as_ref().unwrap();
        assert!(aim.hits("UPDATE orders SET x = 1"), "case-insensitive");
        assert!(!aim.hits("select * from orders"));

        for (args, flag) in [
            (
                sql_error(|a| a.sql_error_code = Some("4001".into())),
                "--sql-error-code",
            ),
            (sql_error(|a| a.sql_error_code = None), "--sql-error-code"),
            (
                sql_error(|a| a.sql_error_match = Some("(unclosed".into())),
                "--sql-error-match",
            ),
            (sql_error(|a| a.sql_error_match = None), "--sql-error-match"),
            (
                sql_error(|a| a.sql_error_probability = Some(1.5)),
                "--sql-error-probability",
            ),
            (
                FaultArgs {
                    with_sql_latency: true,
                    sql_latency_match: Some("report".into()),
                    ..Default::default()
                },
                "--sql-latency-mean",
            ),
            (
                FaultArgs {
                    with_sql_reset: true,
                    sql_reset_match: Some("x".into()),
                    sql_reset_probability: Some(-1.0),
                    ..Default::default()
                },
                "--sql-reset-probability",
            ),
        ] {
            let line = usage_line(args);
            assert!(line.contains(flag), "{line:?} does not name {flag}");
        }
    }
}
