//! `tapline proxy` refuses bad flags, mapping specs and busy ports with one clear line.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{free_port, local, proxy, run_tapline, start_proxy};

/// Runs `tapline proxy ARGS` and returns (exit code, the stderr line naming the problem).
fn refused(args: &[&str]) -> (i32, String) {
    let mut all = vec!["proxy", "--quiet"];
    all.extend_from_slice(args);
    let (code, _, err) = run_tapline(&all);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("tapline:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    (code, lines[0].to_string())
}

#[test]
fn bad_mapping_specs_exit_2_naming_the_spec() {
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    for (spec, says) in [
        ("9098", "expected LISTEN=SCHEME://HOST:PORT"),
        ("abc=tcp://127.0.0.1:1", "listen side 'abc'"),
        ("9098=127.0.0.1:5432", "no SCHEME://"),
        ("9098=ftp://127.0.0.1:21", "unknown scheme 'ftp'"),
        ("9098=psql://127.0.0.1", "not HOST:PORT"),
        ("9098=tcp://127.0.0.1:0", "not HOST:PORT"),
    ] {
        let (code, line) = refused(&["--proxy-address", &addr, "--proxy", spec]);
        assert_eq!(code, 2, "{spec}: {line}");
        assert!(line.contains(spec), "{spec}: {line}");
        assert!(line.contains(says), "{spec}: {line}");
    }
}

#[test]
fn configuration_mistakes_exit_2() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mapping_port = free_port();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--disable-http-proxy".into()], "nothing to serve"),
        (
            vec![
                "--proxy-address".into(),
                addr.clone(),
                "--max-connections".into(),
                "0".into(),
            ],
            "--max-connections",
        ),
        (
            vec![
                "--proxy-address".into(),
                addr.clone(),
                "--max-header-size".into(),
                "10".into(),
            ],
            "--max-header-size",
        ),
        (
            vec![
                "--proxy-address".into(),
                addr.clone(),
                "--proxy".into(),
                format!("{addr}=tcp://127.0.0.1:5432"),
            ],
            "both listen on",
        ),
        (
            vec![
                "--proxy-address".into(),
                addr.clone(),
                "--proxy".into(),
                format!("{mapping_port}=tcp://{addr}"),
            ],
            "a loop",
        ),
        (
            vec![
                "--proxy-address".into(),
                addr.clone(),
                "--proxy".into(),
                format!("{mapping_port}=tcp://no-such-host.invalid:80"),
            ],
            "cannot resolve",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, line) = refused(&args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.contains(says), "{args:?}: {line}");
    }
}

#[test]
fn a_busy_port_is_one_clear_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, line) = refused(&["--proxy-address", &addr]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains(&addr) && line.contains("--proxy-address"),
        "{line}"
    );
    assert!(line.to_lowercase().contains("in use"), "{line}");

    let free = format!("127.0.0.1:{}", free_port());
    let spec = format!("{addr}=tcp://127.0.0.1:9");
    let (code, line) = refused(&["--proxy-address", &free, "--proxy", &spec]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains(&spec), "{line}");
}

#[test]
fn sigterm_stops_cleanly_and_duration_ends_the_run() {
    let addr = local(free_port());
    let mut p = proxy(&["--proxy-address", &addr.to_string(), "--quiet"], &[addr]);
    assert_eq!(p.stop(Duration::from_secs(10)), Some(0), "{}", p.stderr());

    let (mut p, _) = start_proxy(&["--duration", "1s"]);
    assert_eq!(
        p.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        p.stderr()
    );
}
