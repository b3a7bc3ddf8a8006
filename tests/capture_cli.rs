//! `tapline capture` from the command line, on files: filters (-f, trailing words,
//! --filter-from), -c, -w read back by tcpdump and tshark, usage errors (exit 2, one line),
//! and damaged or foreign input (a clear error or a warning, never a panic).

mod common;

use std::fs;
use std::process::Command;

use common::{capture, run_ok, run_tapline, shared_pcap, shared_pcaps, temp_dir};

fn flow_ends(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["kind"] == "flow_end").collect()
}

fn assert_one_line_error(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("tapline: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn filters_from_flag_trailing_words_and_riff_config() {
    let Some(file) = shared_pcap("http-browse-keepalive.pcap") else {
        return;
    };
    let file = file.to_str().unwrap();
    let (code, events, stderr) = capture(&["-r", file]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(flow_ends(&events).len(), 6);

    let (code, events, stderr) = capture(&["-r", file, "-f", "tcp port 49283"]);
    assert_eq!(code, 0, "{stderr}");
    let ends = flow_ends(&events);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["client"], "10.0.2.15:49283");
    assert_eq!(ends[0]["bytes_from_client"], 459);
    assert_eq!(ends[0]["bytes_from_server"], 189);

    let (code, events, stderr) = capture(&["-r", file, "tcp", "port", "49284"]);
    assert_eq!(code, 0, "{stderr}");
    let ends = flow_ends(&events);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["client"], "10.0.2.15:49284");

    let dir = temp_dir();
    let config = dir.path().join("config.lua");
    fs::write(
        &config,
        "local port = 49285\nfunction format() return 'tcp port ' .. port end\n",
    )
    .unwrap();
    let (code, events, stderr) = capture(&["-r", file, "--filter-from", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let ends = flow_ends(&events);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["client"], "10.0.2.15:49285");

    // Two filter sources at once is a usage error.
    let (code, _, stderr) = capture(&["-r", file, "-f", "tcp", "udp"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("one way only"), "{stderr}");
    assert_one_line_error(&stderr);
}

#[test]
fn count_stops_after_n_packets_and_write_makes_a_pcap_tcpdump_and_tshark_read() {
    let Some(file) = shared_pcap("http-retrans-ooo.pcap") else {
        return;
    };
    let dir = temp_dir();
    let written = dir.path().join("out.pcap");
    let (code, _, stderr) = capture(&[
        "-r",
        file.to_str().unwrap(),
        "-c",
        "100",
        "-w",
        written.to_str().unwrap(),
        "tcp port 10978",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("tapline: capture: 100 packets"), "{stderr}");
    if common::have("tcpdump") {
        let text = run_ok(
            "tcpdump",
            Command::new("tcpdump").args(["-n", "-r"]).arg(&written),
        );
        assert_eq!(text.lines().count(), 100);
        assert!(
            text.lines().all(|l| l.contains(".10978")),
            "only the filtered flow"
        );
    }
    if common::have("tshark") {
        let text = run_ok("tshark", Command::new("tshark").arg("-r").arg(&written));
        assert_eq!(text.lines().count(), 100);
    }
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let (code, _, stderr) = run_tapline(&["capture"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("-i IFACE") && stderr.contains("-r FILE"),
        "{stderr}"
    );
    assert_one_line_error(&stderr);

    let (code, _, stderr) = run_tapline(&["capture", "-i", "tapline-no-such-if0"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no such interface: tapline-no-such-if0"),
        "{stderr}"
    );
    assert_one_line_error(&stderr);

    let (code, _, stderr) = run_tapline(&["capture", "-r", "/nonexistent/x.pcap"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/x.pcap"), "{stderr}");
    assert_one_line_error(&stderr);

    let Some(file) = shared_pcap("http-keepalive-5-gets.pcap") else {
        return;
    };
    let file = file.to_str().unwrap();
    let (code, _, stderr) = run_tapline(&["capture", "-r", file, "-f", "tcp port"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid filter \"tcp port\""), "{stderr}");
    assert!(
        stderr.contains("syntax error"),
        "libpcap's message: {stderr}"
    );
    assert_one_line_error(&stderr);

    let (code, _, stderr) =
        run_tapline(&["capture", "-r", file, "-w", "/nonexistent/dir/out.pcap"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/dir/out.pcap"), "{stderr}");

    let (code, _, stderr) = run_tapline(&["capture", "-r", file, "--workers", "0"]);
    assert_eq!(code, 2, "{stderr}");

    let dir = temp_dir();
    let config = dir.path().join("bad.lua");
    fs::write(&config, "return 42\n").unwrap();
    let (code, _, stderr) = run_tapline(&[
        "capture",
        "-r",
        file,
        "--filter-from",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.lua"), "{stderr}");
}

#[test]
fn damaged_and_foreign_files_never_panic() {
    let Some(dir) = shared_pcaps() else { return };
    // Valid records first, then a corrupt one: processed, then one warning line, exit 0.
    let (code, events, stderr) = capture(&[
        "-r",
        dir.join("broken-corrupt-record-header.pcap")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("after 6 packets"), "{stderr}");
    let ends = flow_ends(&events);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["bytes_from_client"], 295);
    assert_eq!(ends[0]["bytes_from_server"], 4208);

    let (code, events, stderr) = capture(&["-r", dir.join("broken-fuzzed.pcap").to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(flow_ends(&events).is_empty());
    assert!(stderr.contains("1 malformed"), "{stderr}");

    let tmp = temp_dir();
    let whole = fs::read(dir.join("pgsql-simple-query-scram-errors.pcap")).unwrap();
    let cut = tmp.path().join("cut.pcap");
    fs::write(&cut, &whole[..5000]).unwrap();
    let (code, _, stderr) = capture(&["-r", cut.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("after 45 packets"), "{stderr}");

    for (name, bytes) in [
        (
            "garbage.pcap",
            b"GET / HTTP/1.1\r\nHost: not a capture\r\n\r\n".to_vec(),
        ),
        ("magic.pcap", {
            let mut b = whole.clone();
            b[..4].copy_from_slice(b"XXXX");
            b
        }),
        ("header-only.pcap", whole[..10].to_vec()),
    ] {
        let path = tmp.path().join(name);
        fs::write(&path, bytes).unwrap();
        let (code, _, stderr) = run_tapline(&["capture", "-r", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: names the file: {stderr}");
        assert_one_line_error(&stderr);
    }

    // Lengths that lie inside otherwise valid records: every IP/TCP length field of every
    // packet of a capture overwritten in turn; each run ends cleanly.
    let lying = tmp.path().join("lying.pcap");
    let mut bytes = whole.clone();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = at + 16;
        if frame + 48 <= bytes.len() {
            bytes[frame + 14 + 2] = 0xff; // IPv4 total length high byte
            bytes[frame + 14] = 0x4f; // IHL 15 words
            bytes[frame + 14 + 20 + 12] = 0xf0; // TCP data offset 15 words
        }
        at = frame + incl;
    }
    fs::write(&lying, &bytes).unwrap();
    let (code, _, stderr) = capture(&["-r", lying.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("tapline: capture: 88 packets"), "{stderr}");
}

#[test]
fn pcapng_with_nanosecond_timestamps_keeps_microseconds() {
    let Some(file) = shared_pcap("http-dvwa-chunked.pcapng") else {
        return;
    };
    let (code, events, stderr) = capture(&["-r", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let first = events.iter().find(|e| e["kind"] == "flow_start").unwrap();
    // First packet 2024-10-28 19:50:02.900383409 UTC.
    assert_eq!(first["ts"], "2024-10-28T19:50:02.900383Z");
    assert_eq!(flow_ends(&events).len(), 4);
}
