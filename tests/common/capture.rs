//! Capture helpers for the end-to-end tests: the privilege live capture needs, the shared
//! captures, `tapline capture` on files, and tshark's output.

use std::path::PathBuf;
use std::process::Command;

use super::{in_ci, json_lines, run_tapline, shared_pcaps, temp_dir};

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
