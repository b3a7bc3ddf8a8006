//! Shared helpers for the end-to-end tests: real processes on loopback, killed by PID.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod broker;
mod capture;
mod net;
mod pki;

// Every test binary compiles this module but uses only some of these.
#[allow(unused_imports)]
pub use broker::{Broker, BrokerKind};
#[allow(unused_imports)]
pub use capture::{can_capture, capture, is_root, record_lo, shared_pcap, tshark_stdout};
#[allow(unused_imports)]
pub use net::{connect_tunnel, curl, curl_env, curl_ok, echo_server, local, read_head, tls_server};
#[allow(unused_imports)]
pub use pki::{test_pki, Pki};

/// The tapline binary under test.
pub fn tapline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapline"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tapline-test-")
        .tempdir()
        .unwrap()
}

/// True when running under CI, where missing tools are failures rather than skips.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Whether `program` is on PATH. In CI a missing program fails the test (`.ci/run` installs
/// everything); elsewhere the test prints why it skips and returns false.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            !in_ci(),
            "{program} is not installed, but CI must have it (.ci/run installs it)"
        );
        eprintln!("SKIP: {program} is not installed (run .ci/run or install it to run this test)");
    }
    found
}

/// The shared captures from ../shared/pcaps, or None (with a message) where they are absent.
pub fn shared_pcaps() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/pcaps");
    if dir.is_dir() {
        Some(dir.canonicalize().unwrap())
    } else {
        eprintln!("SKIP: ../shared/pcaps is absent (it sits beside the repo in CI); skipping");
        None
    }
}

/// A child process killed (SIGTERM, then SIGKILL) by PID when dropped, with its stdout and
/// stderr captured to files.
pub struct Proc {
    child: Option<Child>,
    name: String,
    dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `cmd` with stdout/stderr to files.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let dir = temp_dir();
        let out = fs::File::create(dir.path().join("stdout")).unwrap();
        let err = fs::File::create(dir.path().join("stderr")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.to_string(),
            dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits until `addr` accepts TCP connections; panics with the process's stderr after
    /// `timeout` or if the process exits first.
    pub fn wait_port(&mut self, addr: SocketAddr, timeout: Duration) -> &mut Self {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return self;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before listening on {addr}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} in {timeout:?}:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stdout or stderr contains `needle`.
    pub fn wait_output(&mut self, needle: &str, timeout: Duration) -> &mut Self {
        let deadline = Instant::now() + timeout;
        while !(self.stdout().contains(needle) || self.stderr().contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} in {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    /// Sends a signal by PID (`TERM`, `INT`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM, then waits up to `timeout` for exit (SIGKILL after); returns the exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// Waits up to `timeout` for the process to exit by itself (SIGKILL after).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts `tapline demo` on a free port.
pub fn demo() -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = tapline();
    cmd.args(["demo", "--address", &addr.to_string()]);
    let mut p = Proc::spawn("tapline demo", cmd);
    p.wait_port(addr, Duration::from_secs(10));
    (p, addr)
}

/// Starts `tapline proxy` with `args` and waits until every address in `listening` accepts
/// connections.
pub fn proxy(args: &[&str], listening: &[SocketAddr]) -> Proc {
    let mut cmd = tapline();
    cmd.arg("proxy").args(args);
    let mut p = Proc::spawn("tapline proxy", cmd);
    for addr in listening {
        p.wait_port(*addr, Duration::from_secs(20));
    }
    p
}

/// Starts `tapline proxy --quiet` with its forward proxy on a free address, plus `args`;
/// returns the process and the forward proxy's address.
pub fn start_proxy(args: &[&str]) -> (Proc, SocketAddr) {
    let addr = local(free_port());
    let address = addr.to_string();
    let mut all = vec!["--quiet", "--proxy-address", &address];
    all.extend_from_slice(args);
    (proxy(&all, &[addr]), addr)
}

/// Starts `tapline proxy` with only a mapping proxy, from a free port to `SCHEME://target`,
/// plus `args`; returns the process and the mapping's address.
pub fn start_mapping(scheme: &str, target: SocketAddr, args: &[&str]) -> (Proc, SocketAddr) {
    let listen = local(free_port());
    let spec = format!("{}={scheme}://{target}", listen.port());
    let mut all = vec!["--disable-http-proxy", "--proxy", &spec];
    all.extend_from_slice(args);
    (proxy(&all, &[listen]), listen)
}

/// Runs tapline to completion with `args`; returns (exit code, stdout, stderr).
pub fn run_tapline(args: &[&str]) -> (i32, String, String) {
    let out = tapline().args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a plugin file `name` (parent directories included) with `source` under `dir`;
/// its path.
pub fn write_plugin(dir: &Path, name: &str, source: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, source).unwrap();
    path
}

/// Runs `cmd` to completion and asserts it succeeded (naming it `what`, with its stderr);
/// its stdout.
pub fn run_ok(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal HTTP/1.1 GET over a raw socket through `proxy` (absolute form), returning the
/// status code and body. For tests that must not depend on curl's behaviour.
pub fn http_get_via(proxy: SocketAddr, url: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let status: u16 = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
    (status, buf[head_end..].to_vec())
}

/// A throwaway PostgreSQL cluster on a free loopback port, run as the `postgres` user, with
/// trust authentication; stopped (by PID, via pg_ctl) and removed on drop.
pub struct Postgres {
    /// The server's address.
    pub addr: SocketAddr,
    dir: PathBuf,
    bin: PathBuf,
}

/// Where Debian keeps the PostgreSQL server binaries.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

impl Postgres {
    /// Starts a cluster, or returns None (printing why) where PostgreSQL is not installed
    /// outside CI. Panics in CI, where .ci/run installs it.
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(|_| String::new())
    }

    /// [`Postgres::start`] with more server settings: `extra` gets the cluster's directory
    /// (owned by `postgres`, for files the settings name) and returns `-c name=value` words.
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Option<Postgres> {
        let Some(bin) = pg_bin() else {
            assert!(!in_ci(), "PostgreSQL server binaries missing in CI");
            eprintln!("SKIP: PostgreSQL server is not installed (apt-get install postgresql)");
            return None;
        };
        if !have("psql") {
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tapline-pg-{}-{port}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let as_pg = |args: &str| {
            let status = Command::new("runuser")
                .args(["-u", "postgres", "--", "sh", "-c", args])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            assert!(
                status.status.success(),
                "{args}: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        };
        Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        let data = dir.join("data");
        as_pg(&format!(
            "{}/initdb -D {} -A trust -U postgres --no-sync >/dev/null",
            bin.display(),
            data.display()
        ));
        let extra = extra(&dir);
        Command::new("chown")
            .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        as_pg(&format!(
            "{}/pg_ctl -D {} -l {}/log -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off {extra}\" start",
            bin.display(),
            data.display(),
            dir.display(),
            dir.display()
        ));
        Some(Postgres {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
            bin,
        })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Runs `psql` against `addr` (the server or a proxy in front of it) with `sql`;
    /// returns (exit code, stdout, stderr).
    pub fn psql(addr: SocketAddr, sql: &str) -> (i32, String, String) {
        let out = Command::new("psql")
            .args(["-X", "-v", "ON_ERROR_STOP=0", "-h"])
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string())
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Whether Python can import `module`; outside CI a missing one skips the test (with a
/// line saying so), in CI it fails it (`.ci/run` installs it).
pub fn python_has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !in_ci(),
            "python3 {module} missing in CI (.ci/run installs it)"
        );
        eprintln!("SKIP: python3 {module} is not installed");
    }
    ok
}

/// Whether Python's psycopg 3 is importable; outside CI a missing one skips the test (with
/// a line saying so), in CI it fails it (`.ci/run` installs it).
pub fn have_psycopg() -> bool {
    python_has("psycopg")
}

/// Runs one psql session against `addr` with each of `commands` as its own `-c` (unaligned,
/// tuples only, errors do not stop it); returns (exit code, stdout, stderr).
pub fn psql_session(addr: SocketAddr, commands: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "postgres", "-d", "postgres"])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "disable");
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads `path` line by line into parsed JSON values (for --output files).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let f = fs::File::open(path).unwrap();
    BufReader::new(f)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every line is JSON"))
        .collect()
}

/// SHA-256 of bytes, hex (for byte-identical checks).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

static GRPC_STUBS: OnceLock<PathBuf> = OnceLock::new();

/// A directory holding plugin_pb2.py and plugin_pb2_grpc.py generated from the project's own
/// proto with grpc_tools (once per test binary), plus the test plugins from tests/grpc_plugins.
/// None (with a message) outside CI when grpcio-tools is not installed.
pub fn grpc_stubs() -> Option<PathBuf> {
    let ok = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(!in_ci(), "python grpcio/grpcio-tools missing in CI");
        eprintln!("SKIP: python3 grpcio and grpcio-tools are not installed (pip install grpcio grpcio-tools)");
        return None;
    }
    Some(
        GRPC_STUBS
            .get_or_init(|| {
                let dir =
                    std::env::temp_dir().join(format!("tapline-grpc-stubs-{}", std::process::id()));
                fs::create_dir_all(&dir).unwrap();
                let proto_dir = repo_root().join("crates/tapline-grpc/proto");
                let status = Command::new("python3")
                    .args(["-m", "grpc_tools.protoc", "-I"])
                    .arg(&proto_dir)
                    .arg(format!("--python_out={}", dir.display()))
                    .arg(format!("--grpc_python_out={}", dir.display()))
                    .arg(proto_dir.join("plugin.proto"))
                    .status()
                    .unwrap();
                assert!(status.success(), "grpc_tools.protoc failed");
                for entry in fs::read_dir(repo_root().join("tests/grpc_plugins")).unwrap() {
                    let p = entry.unwrap().path();
                    if p.extension().is_some_and(|e| e == "py") {
                        fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
                    }
                }
                dir
            })
            .clone(),
    )
}

/// Starts the test plugin `script` (from [`grpc_stubs`]'s directory `stubs`) on
/// 127.0.0.1:`port` with extra arguments, and waits until it accepts connections.
pub fn grpc_plugin(stubs: &Path, script: &str, port: u16, args: &[&str]) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(stubs.join(script))
        .arg(port.to_string())
        .args(args)
        .current_dir(stubs);
    let mut p = Proc::spawn(script, cmd);
    p.wait_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    );
    p
}
