//! The export tests' one body, run against each broker by `tests/export_nats.rs` and
//! `tests/export_redis.rs`: agents (`tapline capture -r`, `tapline proxy` under curl load)
//! export to a real broker on loopback, `tapline collect` reads it back, and what arrives is
//! compared with each agent's own `--output` file.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    curl, demo, repo_root, run_tapline, start_proxy, tapline, temp_dir, Broker, BrokerKind, Proc,
};

/// Events by (agent, kind).
type Counts = BTreeMap<(String, String), usize>;

/// The longest a proxied request may take while the broker is away: traffic never waits for
/// it (a request takes milliseconds here).
const NO_STALL: Duration = Duration::from_secs(2);

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// An agent's own `--output` file, counted by kind under `agent`.
fn agent_counts(agent: &str, output: &Path) -> Counts {
    let mut counts = Counts::new();
    for event in lines(output) {
        let kind = event["kind"].as_str().unwrap().to_string();
        *counts.entry((agent.to_string(), kind)).or_default() += 1;
    }
    counts
}

/// Collected events counted once per `event_id`; a repeated id must be the same event
/// (an at-least-once redelivery).
fn distinct_counts(events: &[Value]) -> Counts {
    let mut seen: HashMap<&str, &Value> = HashMap::new();
    let mut counts = Counts::new();
    for event in events {
        let id = event["event_id"]
            .as_str()
            .expect("every event has event_id");
        if let Some(first) = seen.insert(id, event) {
            assert_eq!(first, event, "event id {id} names two different events");
            continue;
        }
        let agent = event["agent"].as_str().expect("every event has agent");
        assert!(
            id.starts_with(&format!("{agent}:")),
            "{id} is not {agent}'s"
        );
        if event["flow"].is_string() {
            assert!(event["flow_uid"].is_string(), "flow event without flow_uid");
        }
        let kind = event["kind"].as_str().unwrap().to_string();
        *counts.entry((agent.to_string(), kind)).or_default() += 1;
    }
    counts
}

/// Runs `collectors` collectors in one group until the stream is idle; every event they
/// wrote.
fn collect(url: &str, dir: &Path, collectors: usize) -> Vec<Value> {
    let outputs: Vec<PathBuf> = (0..collectors)
        .map(|i| dir.join(format!("collected-{i}.jsonl")))
        .collect();
    let mut procs: Vec<Proc> = outputs
        .iter()
        .map(|out| {
            let mut cmd = tapline();
            cmd.args(["collect", "-q", "--idle-exit", "3s", "--from", url])
                .arg("--output")
                .arg(out);
            Proc::spawn("tapline collect", cmd)
        })
        .collect();
    for p in &mut procs {
        assert_eq!(
            p.wait_exit(Duration::from_secs(60)),
            Some(0),
            "{}",
            p.stderr()
        );
    }
    outputs.iter().flat_map(|o| lines(o)).collect()
}

/// The flags that make an agent export to `url`, spooling under `dir`.
fn export_flags(url: &str, agent: &str, dir: &Path) -> Vec<String> {
    let spool = dir.join(format!("spool-{agent}"));
    [
        "--export",
        url,
        "--agent-id",
        agent,
        "--export-spool",
        spool.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Starts `tapline proxy` exporting as agent `px`, writing its own events to `dir/px.jsonl`.
fn export_proxy(url: &str, dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let output = dir.join("px.jsonl");
    let mut args = export_flags(url, "px", dir);
    args.extend(["--output".into(), output.to_str().unwrap().into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    start_proxy(&args)
}

/// Requests through the proxy on a thread until `stop`; each request's status and time.
fn load(
    proxy: SocketAddr,
    origin: SocketAddr,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<(String, Duration)>> {
    let (proxy, url) = (format!("http://{proxy}"), format!("http://{origin}/"));
    std::thread::spawn(move || {
        let mut results = Vec::new();
        while !stop.load(Ordering::Relaxed) && results.len() < 2000 {
            let start = Instant::now();
            let (_, status, _) =
                curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy, &url]);
            results.push((status, start.elapsed()));
            std::thread::sleep(Duration::from_millis(10));
        }
        results
    })
}

/// Every request succeeded, none waited for the broker.
fn assert_never_stalled(results: &[(String, Duration)]) {
    assert!(results.len() > 10, "only {} requests", results.len());
    for (status, took) in results {
        assert_eq!(status, "200");
        assert!(*took < NO_STALL, "a request took {took:?}");
    }
}

/// The value of an end-of-run stats line `tapline: WHAT (URL): N`.
fn stat(stderr: &str, what: &str, url: &str) -> u64 {
    let prefix = format!("tapline: {what} ({url}): ");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{stderr}"))
        .parse()
        .unwrap()
}

/// Two capture agents (different captures) and a proxy under curl load export to one
/// stream; two collectors in one group get every event of every agent, and so does a
/// collector of another group, stopped by SIGTERM.
pub fn every_agent_arrives(kind: BrokerKind) {
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let dir = temp_dir();
    let dir = dir.path();
    let url = broker.url("tapline-events");
    let sample = repo_root().join("samples/sample.pcap");
    let http_only = dir.join("http.pcap");
    let (code, _, err) = run_tapline(&[
        "capture",
        "-q",
        "-r",
        sample.to_str().unwrap(),
        "-w",
        http_only.to_str().unwrap(),
        "tcp port 8080",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut want = Counts::new();
    for (agent, pcap) in [("cap-a", &sample), ("cap-b", &http_only)] {
        let output = dir.join(format!("{agent}.jsonl"));
        let mut args = vec!["capture".to_string(), "-q".into(), "-r".into()];
        args.push(pcap.to_str().unwrap().into());
        args.extend(["--output".into(), output.to_str().unwrap().into()]);
        args.extend(export_flags(&url, agent, dir));
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, _, err) = run_tapline(&args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(stat(&err, "Events spooled to disk", &url), 0, "{err}");
        want.extend(agent_counts(agent, &output));
    }
    let (_origin, origin) = demo();
    let (mut proxy, addr) = export_proxy(&url, dir, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = load(addr, origin, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    assert_never_stalled(&requests.join().unwrap());
    assert_eq!(
        proxy.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    want.extend(agent_counts("px", &dir.join("px.jsonl")));
    assert!(want.keys().any(|(a, _)| a == "cap-b"));

    assert_eq!(distinct_counts(&collect(&url, dir, 2)), want);

    // Another group gets every event too; SIGTERM stops its collector cleanly, and its human
    // lines name the agent.
    let output = dir.join("other-group.jsonl");
    let mut cmd = tapline();
    cmd.args(["collect", "--group", "other", "--from", &url])
        .arg("--output")
        .arg(&output);
    let mut other = Proc::spawn("tapline collect", cmd);
    let total: usize = want.values().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(&output).map_or(0, |t| t.lines().count()) < total {
        assert!(Instant::now() < deadline, "{}", other.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        other.stop(Duration::from_secs(10)),
        Some(0),
        "{}",
        other.stderr()
    );
    assert_eq!(distinct_counts(&lines(&output)), want);
    assert!(
        other.stdout().contains("[px] http 127.0.0.1:"),
        "{}",
        other.stdout()
    );
}

/// The broker is killed while the proxy is under load and comes back on the same port and
/// data: requests never stall, and every event made meanwhile arrives from the spool.
pub fn broker_loss_loses_nothing(kind: BrokerKind) {
    let Some(mut broker) = Broker::start(kind) else {
        return;
    };
    let dir = temp_dir();
    let dir = dir.path();
    let url = broker.url("tapline-events");
    let (_origin, origin) = demo();
    let (mut proxy, addr) = export_proxy(&url, dir, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = load(addr, origin, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    assert_never_stalled(&requests.join().unwrap());
    assert_eq!(
        proxy.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let err = proxy.stderr();
    assert!(stat(&err, "Events spooled to disk", &url) > 0, "{err}");
    assert_eq!(
        stat(&err, "Events dropped from a full spool", &url),
        0,
        "{err}"
    );

    let want = agent_counts("px", &dir.join("px.jsonl"));
    assert_eq!(distinct_counts(&collect(&url, dir, 1)), want);
}

/// A broker that is down when the proxy starts: the proxy serves anyway and warns once;
/// with a tiny spool the oldest events are dropped and counted; the next run, with the
/// broker up, sends what the spool kept.
pub fn unreachable_broker_spools_then_drains(kind: BrokerKind) {
    let Some(mut broker) = Broker::start(kind) else {
        return;
    };
    broker.kill();
    let dir = temp_dir();
    let dir = dir.path();
    let url = broker.url("tapline-events");
    let (_origin, origin) = demo();
    let (mut proxy, addr) = export_proxy(&url, dir, &["--export-spool-max", "16KiB"]);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = load(addr, origin, stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    assert_never_stalled(&requests.join().unwrap());
    assert_eq!(
        proxy.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        proxy.stderr()
    );
    let err = proxy.stderr();
    assert_eq!(err.matches("broker unreachable").count(), 1, "{err}");
    let dropped = stat(&err, "Events dropped from a full spool", &url);
    assert!(dropped > 0, "{err}");
    assert_eq!(
        stat(&err, "Events the broker acknowledged", &url),
        0,
        "{err}"
    );
    let made: usize = agent_counts("px", &dir.join("px.jsonl")).values().sum();

    broker.restart();
    let sample = repo_root().join("samples/sample.pcap");
    let mut args = vec!["capture", "-q", "-r", sample.to_str().unwrap()];
    let flags = export_flags(&url, "px", dir);
    args.extend(flags.iter().map(|s| s.as_str()));
    let (code, _, err) = run_tapline(&args);
    assert_eq!(code, 0, "{err}");
    let events = collect(&url, dir, 1);
    let from_proxy = events.iter().filter(|e| e["mode"] == "proxy").count();
    assert_eq!(
        from_proxy as u64,
        made as u64 - dropped,
        "spooled events arrive, less the dropped"
    );
}

/// Bad export flags: one line naming the flag, exit 2.
pub fn bad_flags_exit_2(kind: BrokerKind) {
    let sample = repo_root().join("samples/sample.pcap");
    let sample = sample.to_str().unwrap();
    let scheme = kind.scheme();
    let file = temp_dir();
    let not_a_dir = file.path().join("file");
    fs::write(&not_a_dir, "").unwrap();
    let under_file = not_a_dir.join("spool");
    let no_name = format!("{scheme}://127.0.0.1:1");
    let named = format!("{scheme}://127.0.0.1:1/events");
    let cases: [(&[&str], &str); 4] = [
        (&["--export", "kafka://127.0.0.1:9092/events"], "--export: "),
        (&["--export", &no_name], "--export: "),
        (
            &[
                "--export",
                &named,
                "--export-spool",
                under_file.to_str().unwrap(),
            ],
            "--export-spool ",
        ),
        (&["--export", &named, "--agent-id", " "], "--agent-id"),
    ];
    for (flags, names) in cases {
        let mut args = vec!["capture", "-q", "-r", sample];
        args.extend_from_slice(flags);
        let (code, _, err) = run_tapline(&args);
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(names), "{flags:?}: {err}");
    }
    let (code, _, err) = run_tapline(&["collect", "--from", &no_name]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--from: ") && err.lines().count() == 1,
        "{err}"
    );
}
