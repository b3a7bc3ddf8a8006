//! Capture helpers for the end-to-end tests: the privilege live capture needs, the shared
//! captures, `tapline capture` on files, and tshark's output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{in_ci, json_lines, run_tapline, shared_pcaps, temp_dir, Proc};

/// Whether the tests run as root (`id -u` is 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether live capture can run: it needs root here. CI runs as root, so there it must run;
/// elsewhere the test prints why it skips.
pub fn can_capture() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "CI runs as root: live capture tests must run there"
    );
    eprintln!("SKIP: live capture needs root or CAP_NET_RAW");
    false
}

/// The shared capture `name` (see [`shared_pcaps`]), or None (with a message) where absent.
pub fn shared_pcap(name: &str) -> Option<PathBuf> {
    shared_pcaps().map(|d| d.join(name))
}

/// Runs `tapline capture --quiet --output FILE args…` to completion; returns (exit code, the
/// events written, stderr).
pub fn capture(args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let dir = temp_dir();
    let out = dir.path().join("events.jsonl");
    let mut all = vec!["capture", "--quiet", "--output", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, _, stderr) = run_tapline(&all);
    let events = if out.exists() {
        json_lines(&out)
    } else {
        Vec::new()
    };
    (code, events, stderr)
}

/// Runs tshark with `args`; its stdout, whatever its exit status (on a damaged file it exits
/// non-zero after printing what it could read).
pub fn tshark_stdout(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("run tshark");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `workload` while tcpdump records `tcp port PORT` on lo into `file` (a 64 MiB kernel
/// buffer: the workloads burst thousands of segments on a busy machine), and asserts the
/// kernel dropped nothing, since every comparison with the recording assumes it is whole.
pub fn record_lo(file: &Path, port: u16, workload: impl FnOnce()) {
    let mut cmd = Command::new("tcpdump");
    cmd.args([
        "-i",
        "lo",
        "--immediate-mode",
        "-U",
        "-B",
        "65536",
        "-s",
        "0",
        "-w",
    ])
    .arg(file)
    .args(["tcp", "port", &port.to_string()]);
    let mut tcpdump = Proc::spawn("tcpdump", cmd);
    tcpdump.wait_output("listening on", Duration::from_secs(20));
    workload();
    // Let the last segments (FINs) reach tcpdump before stopping it.
    std::thread::sleep(Duration::from_millis(500));
    tcpdump.stop(Duration::from_secs(10));
    let report = tcpdump.stderr();
    let dropped = report
        .lines()
        .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(
        dropped,
        Some(0),
        "tcpdump lost packets, so the recording cannot be compared: {report}"
    );
}
