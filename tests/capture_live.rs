//! Live capture on `lo` (needs root or CAP_NET_RAW; CI runs as root): curl fetches from
//! `tapline demo` while tapline captures, and the request's bytes reach the pipeline; SIGTERM
//! stops it cleanly with a `-w` file tcpdump reads. Without the privilege the command exits 1
//! saying so.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    can_capture, curl_ok, demo, have, is_root, json_lines, run_ok, tapline, temp_dir, Proc,
};

#[test]
fn live_capture_on_lo_sees_curl_fetching_from_demo() {
    if !can_capture() || !have("curl") {
        return;
    }
    let (_demo, addr) = demo();
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    let written = dir.path().join("live.pcap");
    let mut cmd = tapline();
    cmd.args(["capture", "-i", "lo", "--quiet", "--output"])
        .arg(&events)
        .arg("-w")
        .arg(&written)
        .args(["tcp", "port", &addr.port().to_string()]);
    let mut cap = Proc::spawn("tapline capture", cmd);
    cap.wait_output("listening on lo", Duration::from_secs(20));

    let url = format!("http://{addr}/echo?from=tapline-live-test");
    curl_ok(&["-H", "X-Probe: captured-live", &url]);
    // Let the reader take the last packets from the kernel before stopping.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        cap.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        cap.stderr()
    );

    let stderr = cap.stderr();
    assert!(
        stderr.contains("tapline: capture: "),
        "stats line: {stderr}"
    );
    assert!(stderr.contains("kernel: "), "kernel counters: {stderr}");
    let events = json_lines(&events);
    let end = events
        .iter()
        .find(|e| e["kind"] == "flow_end" && e["server"] == addr.to_string())
        .unwrap_or_else(|| panic!("no flow_end for {addr}: {events:#?}\n{stderr}"));
    let request_len =
        format!("GET /echo?from=tapline-live-test HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/")
            .len() as u64;
    assert!(
        end["bytes_from_client"].as_u64().unwrap() > request_len,
        "the request's bytes were reassembled: {end}"
    );
    assert!(end["bytes_from_server"].as_u64().unwrap() > 0, "{end}");
    assert_eq!(end["end"], "fin", "{end}");

    if have("tcpdump") {
        let text = run_ok(
            "tcpdump reading the -w file",
            Command::new("tcpdump")
                .args(["-n", "-A", "-r"])
                .arg(&written),
        );
        assert!(text.contains("X-Probe: captured-live"), "{text}");
    }
}

#[test]
fn duration_stops_a_live_capture_by_itself() {
    if !can_capture() {
        return;
    }
    let mut cmd = tapline();
    cmd.args([
        "capture",
        "-i",
        "lo",
        "--quiet",
        "--duration",
        "1s",
        "tcp port 9",
    ]);
    let mut cap = Proc::spawn("tapline capture", cmd);
    assert_eq!(
        cap.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        cap.stderr()
    );
    assert!(
        cap.stderr().contains("tapline: capture: 0 packets"),
        "{}",
        cap.stderr()
    );
}

#[test]
fn without_privileges_live_capture_exits_1_and_says_why() {
    if !is_root() {
        eprintln!("SKIP: dropping privileges needs root");
        return;
    }
    if !have("setpriv") {
        return;
    }
    // A copy the unprivileged user can reach, wherever the checkout is.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tapline-unpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("tapline");
    std::fs::copy(env!("CARGO_BIN_EXE_tapline"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .args(["capture", "-i", "lo", "-c", "1"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root or CAP_NET_RAW"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
