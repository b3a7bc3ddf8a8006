//! NSS key-log lines (`CLIENT_RANDOM`, `CLIENT_HANDSHAKE_TRAFFIC_SECRET`, …) for both legs of
//! every intercepted connection, appended to one file, so Wireshark can decrypt a capture of
//! the same traffic (`--tls-keylog FILE`, or `SSLKEYLOGFILE` as browsers and curl read it).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Appends key-log lines to a file, one whole line per write.
pub struct KeyLogWriter {
    path: PathBuf,
    file: Mutex<File>,
}

impl std::fmt::Debug for KeyLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyLogWriter({})", self.path.display())
    }
}

impl KeyLogWriter {
    /// Opens `path` for appending (made with mode 0600: these secrets decrypt the traffic).
    pub fn open(path: &Path) -> std::io::Result<KeyLogWriter> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(KeyLogWriter {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }
}

impl rustls::KeyLog for KeyLogWriter {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            let _ = write!(line, "{b:02x}");
        }
        line.push(' ');
        for b in secret {
            let _ = write!(line, "{b:02x}");
        }
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!("--tls-keylog {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::KeyLog;

    #[test]
    fn lines_are_nss_key_log_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        let log = KeyLogWriter::open(&path).unwrap();
        log.log("CLIENT_RANDOM", &[0xab, 0x01], &[0xff]);
        log.log("EXPORTER_SECRET", &[0x00], &[0x10, 0x20]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "CLIENT_RANDOM ab01 ff\nEXPORTER_SECRET 00 1020\n");
    }
}
