//! tcpdump's file options for long runs on `tapline capture -w`: a ring of files by size
//! (`-C`, `-W`), files by time named with strftime (`-G`), pcapng with the interface name and
//! the drop counts (`--pcapng`), valid files after SIGTERM mid-write, the live source options
//! (`-Q`, `-B`, `-p`), and the bad inputs that exit 2 with one line. Live captures on `lo`
//! need root (CI runs as root); the traffic is paced TCP between two sockets of this test,
//! on an ephemeral port the capture filters on.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{can_capture, have, in_ci, repo_root, run_tapline, tapline, temp_dir, Proc};

/// A listener on an ephemeral loopback port that reads and drops whatever it is sent.
struct Traffic {
    listener: TcpListener,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// The BPF filter for this traffic.
    fn filter(&self) -> String {
        format!("tcp port {}", self.port())
    }

    /// Sends `total` bytes in writes of `chunk` bytes, one every `pace`, on one connection;
    /// the receiver's thread returns how many bytes it read.
    fn send(self, total: usize, chunk: usize, pace: Duration) -> JoinHandle<usize> {
        let addr = self.listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut conn, _) = self.listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut seen = 0;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen += n;
            }
            seen
        });
        let mut conn = TcpStream::connect(addr).unwrap();
        let chunk = vec![0x5au8; chunk];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            conn.write_all(&chunk[..n]).unwrap();
            sent += n;
            std::thread::sleep(pace);
        }
        drop(conn);
        reader
    }
}

/// Starts `tapline capture -i lo --quiet args… FILTER` and waits until it listens.
fn live_capture(args: &[&str], filter: &str) -> Proc {
    let mut cmd = tapline();
    cmd.args(["capture", "-i", "lo", "--quiet"])
        .args(args)
        .arg(filter);
    let mut cap = Proc::spawn("tapline capture", cmd);
    cap.wait_output("listening on lo", Duration::from_secs(20));
    cap
}

/// Stops a capture with SIGTERM (after letting the reader drain the kernel); its stderr.
fn stop(mut cap: Proc) -> String {
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cap.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        cap.stderr()
    );
    cap.stderr()
}

/// The files in `dir`, sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Whether tshark is here; in CI it must be.
fn have_tshark() -> bool {
    if have("tshark") {
        return true;
    }
    assert!(!in_ci(), "CI has tshark");
    eprintln!("SKIP (tshark checks): tshark is not installed");
    false
}

/// The number of packets tshark reads from `file`, which must read cleanly (no "cut short"
/// or other complaint, exit 0).
fn tshark_count(file: &Path) -> usize {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
        .expect("run tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Running as user \"root\""))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "tshark on {}: {stderr}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `tapline capture -r file` reads it to the end without a damaged-record warning; the
/// number of packets it read.
fn tapline_count(file: &Path) -> u64 {
    let (code, _, stderr) = run_tapline(&["capture", "--quiet", "-r", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{}: {stderr}", file.display());
    stats_number(&stderr, "capture: ", " packets")
}

/// The number between `before` and `after` in tapline's stats line.
fn stats_number(stderr: &str, before: &str, after: &str) -> u64 {
    let start = stderr
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {stderr}"))
        + before.len();
    let len = stderr[start..].find(after).unwrap();
    stderr[start..start + len].trim().parse().unwrap()
}

#[test]
fn size_ring_of_three_keeps_exactly_three_valid_files() {
    if !can_capture() {
        return;
    }
    let dir = temp_dir();
    let traffic = Traffic::new();
    let base = dir.path().join("ring.pcap");
    let cap = live_capture(
        &[
            "-w",
            base.to_str().unwrap(),
            "-C",
            "1",
            "-W",
            "3",
            "-B",
            "16384",
        ],
        &traffic.filter(),
    );
    // 4.5 MB at about 4 MB/s: the ring goes round at least once.
    let received = traffic.send(4_500_000, 1 << 16, Duration::from_millis(15));
    assert_eq!(received.join().unwrap(), 4_500_000);
    let stderr = stop(cap);

    let names: Vec<String> = files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["ring.pcap0", "ring.pcap1", "ring.pcap2"],
        "{stderr}"
    );
    let captured = stats_number(&stderr, "capture: ", " packets");
    let mut kept = 0;
    for file in files(dir.path()) {
        let size = fs::metadata(&file).unwrap().len();
        // Closed once past 1,000,000 bytes: over by less than one 64 KiB loopback packet.
        assert!(size <= 1_000_000 + 70_000, "{}: {size}", file.display());
        let read = tapline_count(&file);
        assert!(read > 0, "{}", file.display());
        if have_tshark() {
            assert_eq!(tshark_count(&file) as u64, read, "{}", file.display());
        }
        kept += read;
    }
    assert!(
        kept < captured,
        "the oldest files were overwritten: {kept} of {captured} kept"
    );
}

#[test]
fn time_rotation_names_files_with_strftime() {
    if !can_capture() {
        return;
    }
    let dir = temp_dir();
    let traffic = Traffic::new();
    let pattern = dir.path().join("cap-%Y%m%d-%H%M%S.pcap");
    let filter = traffic.filter();
    let mut cmd = tapline();
    cmd.args([
        "capture",
        "-i",
        "lo",
        "--quiet",
        "--duration",
        "5s",
        "-G",
        "2",
    ])
    .arg("-w")
    .arg(&pattern)
    .arg(&filter);
    let mut cap = Proc::spawn("tapline capture", cmd);
    cap.wait_output("listening on lo", Duration::from_secs(20));
    let started = Instant::now();
    // A packet every 50 ms for the whole run, so every interval has packets.
    let received = traffic.send(90 * 1000, 1000, Duration::from_millis(50));
    assert!(started.elapsed() >= Duration::from_millis(4000));
    assert_eq!(
        cap.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        cap.stderr()
    );
    assert_eq!(received.join().unwrap(), 90 * 1000);

    let files = files(dir.path());
    assert!(
        (2..=4).contains(&files.len()),
        "5 s in 2 s files: {files:?}"
    );
    let mut total = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        // cap-YYYYmmdd-HHMMSS.pcap
        let stamp = name
            .strip_prefix("cap-")
            .and_then(|n| n.strip_suffix(".pcap"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(stamp.len(), 15, "{name}");
        assert!(
            stamp.chars().enumerate().all(|(i, c)| if i == 8 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }),
            "{name}"
        );
        total += tapline_count(file);
        if have_tshark() {
            tshark_count(file);
        }
    }
    let captured = stats_number(&cap.stderr(), "capture: ", " packets");
    assert_eq!(total, captured, "every packet is in one of the files");
}

#[test]
fn sigterm_mid_write_leaves_whole_files() {
    stopped_mid_write_leaves_whole_files("TERM");
}

#[test]
fn even_sigkill_mid_write_leaves_files_that_end_on_a_whole_record() {
    stopped_mid_write_leaves_whole_files("KILL");
}

/// A `-C 1` capture under traffic stopped by `signal`: every file reads cleanly; after
/// SIGTERM they hold every captured packet.
fn stopped_mid_write_leaves_whole_files(signal: &str) {
    if !can_capture() {
        return;
    }
    let dir = temp_dir();
    let traffic = Traffic::new();
    let base = dir.path().join("cut.pcap");
    let filter = traffic.filter();
    let mut cap = live_capture(&["-w", base.to_str().unwrap(), "-C", "1"], &filter);
    // Traffic still flowing when the capture is told to stop.
    let sender =
        std::thread::spawn(move || traffic.send(6_000_000, 1 << 16, Duration::from_millis(10)));
    std::thread::sleep(Duration::from_millis(1500));
    cap.signal(signal);
    let code = cap.wait_exit(Duration::from_secs(20));
    let stderr = cap.stderr();
    let killed = signal == "KILL";
    assert_eq!(code, if killed { None } else { Some(0) }, "{stderr}");
    sender.join().unwrap().join().unwrap();

    let files = files(dir.path());
    assert!(files.len() >= 2, "rotated before the stop: {files:?}");
    assert_eq!(files[0], base, "the first file has the -w name");
    let mut total = 0;
    for file in &files {
        total += tapline_count(file);
        if have_tshark() {
            tshark_count(file);
        }
    }
    if !killed {
        assert_eq!(total, stats_number(&stderr, "capture: ", " packets"));
    }
}

#[test]
fn pcapng_names_the_interface_and_records_the_drops() {
    if !can_capture() {
        return;
    }
    let dir = temp_dir();
    let traffic = Traffic::new();
    let file = dir.path().join("live.pcapng");
    let cap = live_capture(
        &["--pcapng", "-w", file.to_str().unwrap()],
        &traffic.filter(),
    );
    let received = traffic.send(500_000, 1 << 14, Duration::from_millis(10));
    received.join().unwrap();
    let stderr = stop(cap);
    let captured = stats_number(&stderr, "capture: ", " packets");
    let kernel_received = stats_number(&stderr, "kernel: ", " received");
    let kernel_dropped = stats_number(&stderr, "received, ", " dropped");
    let if_dropped = stats_number(&stderr, "dropped (", " by the interface");

    assert_eq!(tapline_count(&file), captured);
    let bytes = fs::read(&file).unwrap();
    let stats = interface_statistics(&bytes);
    assert_eq!(stats.len(), 1, "one interface statistics block");
    let (options, comment) = &stats[0];
    assert_eq!(options.get(&4), Some(&kernel_received), "isb_ifrecv");
    assert_eq!(options.get(&7), Some(&kernel_dropped), "isb_osdrop");
    assert_eq!(options.get(&5), Some(&if_dropped), "isb_ifdrop");
    assert!(
        comment.contains(&format!("dropped {kernel_dropped} (kernel drops)")),
        "{comment}"
    );

    if have_tshark() {
        assert_eq!(tshark_count(&file) as u64, captured);
        let out = Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&file)
            .args(["-T", "fields", "-e", "frame.interface_name"])
            .output()
            .unwrap();
        let names = String::from_utf8_lossy(&out.stdout);
        assert!(
            !names.is_empty() && names.lines().all(|l| l == "lo"),
            "{names}"
        );
    }
    if have("capinfos") {
        let out = Command::new("capinfos")
            .arg("-I")
            .arg(&file)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stdout);
        assert!(info.contains("Name = lo"), "{info}");
        assert!(info.contains("Number of stat entries = 1"), "{info}");
    }
}

/// The interface statistics blocks of a little-endian pcapng file: their 64-bit counter
/// options (code → value) and their comment.
fn interface_statistics(bytes: &[u8]) -> Vec<(std::collections::HashMap<u16, u64>, String)> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut found = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let (kind, len) = (u32_at(at), u32_at(at + 4) as usize);
        assert!(len >= 12 && at + len <= bytes.len(), "block at {at}");
        if kind == 5 {
            let mut counters = std::collections::HashMap::new();
            let mut comment = String::new();
            let mut opt = at + 8 + 12;
            while opt + 4 <= at + len - 4 {
                let code = u16::from_le_bytes([bytes[opt], bytes[opt + 1]]);
                let olen = u16::from_le_bytes([bytes[opt + 2], bytes[opt + 3]]) as usize;
                let value = &bytes[opt + 4..opt + 4 + olen];
                match (code, olen) {
                    (0, _) => break,
                    (1, _) => comment = String::from_utf8_lossy(value).into_owned(),
                    (4 | 5 | 7, 8) => {
                        counters.insert(code, u64::from_le_bytes(value.try_into().unwrap()));
                    }
                    _ => {}
                }
                opt += 4 + olen.div_ceil(4) * 4;
            }
            found.push((counters, comment));
        }
        at += len;
    }
    found
}

#[test]
fn direction_buffer_and_no_promiscuous_apply_to_live_captures() {
    if !can_capture() {
        return;
    }
    // libpcap shows each loopback packet once, as received: `-Q out` sees none of them.
    for (direction, expect_packets) in [("in", true), ("out", false)] {
        let traffic = Traffic::new();
        let filter = traffic.filter();
        let cap = live_capture(&["-Q", direction, "-B", "4096", "-p"], &filter);
        traffic.send(10_000, 1000, Duration::ZERO).join().unwrap();
        let stderr = stop(cap);
        let packets = stats_number(&stderr, "capture: ", " packets");
        assert_eq!(packets > 0, expect_packets, "-Q {direction}: {stderr}");
    }
}

#[test]
fn bad_file_options_exit_2_with_one_line_naming_the_flag() {
    let sample = repo_root().join("samples/sample.pcap");
    let sample = sample.to_str().unwrap();
    let dir = temp_dir();
    let out = dir.path().join("out.pcap");
    let out = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-r", sample, "-w", out, "-C", "0"], "-C 0"),
        (&["-r", sample, "-w", out, "-W", "3"], "-W needs -C"),
        (&["-r", sample, "-w", out, "-G", "0"], "-G 0"),
        (&["-r", sample, "-C", "1"], "-C needs -w"),
        (
            &["-r", sample, "-w", "/nonexistent/dir/out.pcap", "-C", "1"],
            "-w: cannot write /nonexistent/dir/out.pcap",
        ),
        (&["-r", sample, "-w", "cap-%Q", "-G", "1"], "-w: "),
        (&["-i", "lo", "-Q", "sideways"], "-Q: \"sideways\""),
        (&["-r", sample, "-Q", "in"], "-Q applies to live captures"),
        (&["-r", sample, "-p"], "-p applies to live captures"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["capture", "--quiet"];
        all.extend_from_slice(args);
        let (code, _, stderr) = run_tapline(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("tapline: "), "{args:?}: {stderr}");
    }
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}
