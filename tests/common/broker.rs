//! Real message brokers for the export tests: NATS with JetStream (`nats-server -js`) and
//! Redis, on a free loopback port with their data in a temporary directory; killed by PID
//! (and restartable on the same port and data) by the test, stopped on drop.

use std::process::Command;
use std::time::Duration;

use super::{free_port, have, local, temp_dir, Proc};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `nats-server -js`.
    Nats,
    /// `redis-server` (append-only file on, so a killed server comes back with its streams).
    Redis,
}

impl BrokerKind {
    fn program(self) -> &'static str {
        match self {
            BrokerKind::Nats => "nats-server",
            BrokerKind::Redis => "redis-server",
        }
    }

    /// The URL scheme tapline takes for it.
    pub fn scheme(self) -> &'static str {
        match self {
            BrokerKind::Nats => "nats",
            BrokerKind::Redis => "redis",
        }
    }
}

/// A running (or killed, restartable) broker.
pub struct Broker {
    /// Which broker.
    pub kind: BrokerKind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Broker {
    /// Starts the broker, or returns None (printing why) when it is not installed; in CI
    /// that is a failure instead.
    pub fn start(kind: BrokerKind) -> Option<Broker> {
        if !have(kind.program()) {
            return None;
        }
        let mut broker = Broker {
            kind,
            port: free_port(),
            dir: temp_dir(),
            proc: None,
        };
        broker.restart();
        Some(broker)
    }

    /// The URL of `name` (a subject or a stream key) on this broker.
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}", self.kind.scheme(), self.port)
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal("KILL");
            proc.wait_exit(Duration::from_secs(10));
        }
    }

    /// Starts the broker again on the same port with the same data.
    pub fn restart(&mut self) {
        let data = self.dir.path();
        let port = self.port.to_string();
        let mut cmd = Command::new(self.kind.program());
        match self.kind {
            BrokerKind::Nats => cmd
                .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
                .arg(data),
            BrokerKind::Redis => cmd
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "yes", "--dir"])
                .arg(data),
        };
        let mut proc = Proc::spawn(self.kind.program(), cmd);
        proc.wait_port(local(self.port), Duration::from_secs(20));
        self.proc = Some(proc);
    }
}
