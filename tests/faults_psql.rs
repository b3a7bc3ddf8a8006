//! A latency fault on a `psql://` mapping slows a real psql session's queries as configured,
//! as psql's own `\timing` reports them.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{start_mapping, Postgres};

/// The `Time: N ms` lines psql prints under `\timing` for `queries` run against `addr`.
fn timings(addr: SocketAddr, queries: &[&str]) -> Vec<f64> {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", "\\timing on"])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "disable");
    for q in queries {
        cmd.args(["-c", q]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .map(|t| t.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn latency_per_read_write_slows_every_query_of_a_psql_session() {
    let Some(pg) = Postgres::start() else { return };
    let (_proxy, listen) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--with-latency",
            "--latency-per-read-write",
            "--latency-side",
            "server",
            "--latency-direction",
            "ingress",
            "--latency-mean",
            "200",
            "--latency-stddev",
            "0",
        ],
    );

    let queries = [
        "select 1",
        "select count(*) from pg_class",
        "select pg_sleep(0.05)",
    ];
    let direct = timings(pg.addr, &queries);
    let faulted = timings(listen, &queries);
    assert_eq!(
        (direct.len(), faulted.len()),
        (3, 3),
        "{direct:?} {faulted:?}"
    );
    for ((q, d), f) in queries.iter().zip(&direct).zip(&faulted) {
        // Each answer is read from the server at least once (one chunk) and every read is
        // delayed 200 ms, so no query can take less through the fault.
        assert!(
            *f >= 199.0,
            "{q}: {f:.1} ms through the fault vs {d:.1} ms direct"
        );
    }
}

#[test]
fn packet_loss_slows_but_never_breaks_a_psql_session() {
    let Some(pg) = Postgres::start() else { return };
    let (_proxy, listen) = start_mapping(
        "psql",
        pg.addr,
        &[
            "--quiet",
            "--with-packet-loss",
            "--packet-loss-direction",
            "both",
            "--packet-loss-probability",
            "0.05",
        ],
    );
    // About 70 kB of rows is some 50 segments: lost ones are retransmitted, late, intact.
    let sql = "select i, md5(i::text) from generate_series(1, 1500) i";
    let (code, direct, err) = Postgres::psql(pg.addr, sql);
    assert_eq!(code, 0, "{err}");
    let (code, lossy, err) = Postgres::psql(listen, sql);
    assert_eq!(code, 0, "through packet loss: {err}");
    assert_eq!(lossy, direct, "rows differ through packet loss");
    assert!(direct.contains("(1500 rows)"));
}
