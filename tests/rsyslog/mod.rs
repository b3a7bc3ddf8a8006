//! A real rsyslogd for tests: its own configuration (tests/rsyslog/tapline.conf) in a temporary
//! directory, UDP and TCP inputs on free loopback ports, and the messages it received read
//! back from its output files. Stopped by PID (SIGTERM) on drop.
//!
//! Used by the root integration tests (`mod rsyslog;`) and by tapline-output's own tests
//! (`#[path]`), so it depends on std and tempfile only.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, restartable) rsyslogd.
pub struct Rsyslog {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// UDP input port on 127.0.0.1.
    pub udp: u16,
    /// TCP input port on 127.0.0.1.
    pub tcp: u16,
}

/// Where rsyslogd is, if installed.
fn rsyslogd() -> Option<PathBuf> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Rsyslog {
    /// Starts rsyslogd, or returns None (printing why) when it is not installed or not
    /// runnable here; in CI (`CI` set) that is a failure instead.
    pub fn start() -> Option<Rsyslog> {
        let ci = std::env::var_os("CI").is_some();
        if rsyslogd().is_none() {
            assert!(!ci, "rsyslogd is not installed, but CI must have it");
            eprintln!("SKIP: rsyslogd is not installed (apt-get install rsyslog)");
            return None;
        }
        let tcp = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let udp = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::Builder::new()
            .prefix("tapline-rsyslog-")
            .tempdir()
            .unwrap();
        let template = include_str!("tapline.conf");
        let conf = template
            .replace("@DIR@", dir.path().to_str().unwrap())
            .replace("@UDP@", &udp.to_string())
            .replace("@TCP@", &tcp.to_string());
        fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            child: None,
            dir,
            udp,
            tcp,
        };
        r.restart();
        r.wait_udp_ready();
        Some(r)
    }

    /// The directory holding the configuration and output files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `udp://127.0.0.1:PORT`
    pub fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}", self.udp)
    }

    /// `tcp://127.0.0.1:PORT`
    pub fn tcp_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.tcp)
    }

    /// Starts rsyslogd (again) on the same ports and waits for its TCP input.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "rsyslogd is already running");
        let dir = self.dir.path();
        let err = fs::File::create(dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(rsyslogd().unwrap())
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.tcp)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({status}):\n{}",
                    fs::read_to_string(dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "rsyslogd did not listen on TCP");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops rsyslogd (SIGTERM by PID) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends UDP probes until one is logged, so UDP tests don't race rsyslog's start-up.
    fn wait_udp_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.raw().iter().any(|l| l.contains("tapline-probe")) {
            assert!(Instant::now() < deadline, "rsyslogd did not log UDP probes");
            let _ = socket.send_to(
                b"<14>1 - - probe - - - tapline-probe",
                ("127.0.0.1", self.udp),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn read_lines(&self, file: &str) -> Vec<String> {
        fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("tapline-probe") && !l.contains("rsyslogd"))
            .map(str::to_string)
            .collect()
    }

    /// Messages as received (`%rawmsg%`), probes and rsyslog's own lines left out.
    pub fn raw(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("raw.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Messages as parsed: `[pri, hostname, app-name, procid, msgid, structured-data, msg]`.
    pub fn fields(&self) -> Vec<Vec<String>> {
        self.read_lines("fields.log")
            .iter()
            .map(|l| l.splitn(7, '|').map(str::to_string).collect())
            .collect()
    }

    /// Waits until at least `n` parsed messages are logged; returns them.
    pub fn wait_fields(&self, n: usize, timeout: Duration) -> Vec<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let fields = self.fields();
            if fields.len() >= n {
                return fields;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslog logged {} of {n} messages in {timeout:?}:\n{}",
                fields.len(),
                self.read_lines("raw.log").join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Raw messages, probes and rsyslog's own lines left out.
    pub fn messages(&self) -> Vec<String> {
        self.read_lines("raw.log")
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
