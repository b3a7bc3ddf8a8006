//! File descriptors: the proxy raises its soft open-files limit to the hard one at start (a
//! proxy holds two per connection, and distributions default the soft limit to 1024), keeps
//! its connection limit within what the descriptors carry, and when they run out anyway,
//! accepting pauses with one warning now and then while the flows already open go on.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft open-files limit to the hard one; the limit now in force (`None` when
/// the system says nothing).
pub fn raise_open_files_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), hard) = (limit.current, limit.maximum) else {
        return None;
    };
    let Some(hard) = hard else {
        return Some(current);
    };
    if current >= hard {
        return Some(current);
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    ) {
        Ok(()) => Some(hard),
        Err(e) => {
            tracing::debug!("cannot raise the open-files limit from {current} to {hard}: {e}");
            Some(current)
        }
    }
}

/// Descriptors one relayed connection may hold: its two sockets and, while it splices, a
/// pipe (two descriptors) each way.
const PER_CONNECTION: u64 = 6;

/// The most connections `open_files` descriptors carry, at most `wanted`: what is left after
/// a reserve for everything else (listeners, the runtime, outputs, plugins), over
/// [`PER_CONNECTION`]. Accepting stops there, so an accepted connection always has the
/// descriptors for its upstream (at least one connection is allowed).
pub fn connections_within(open_files: u64, wanted: usize) -> usize {
    let reserve = (open_files / 4).min(64);
    let usable = open_files.saturating_sub(reserve) / PER_CONNECTION;
    wanted.min(usize::try_from(usable.max(1)).unwrap_or(usize::MAX))
}

/// How long accepting pauses after it failed.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about failing accepts this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Says, at most once every [`WARN_EVERY`] for the whole process, why accepting failed.
pub(crate) fn accept_failed(listener: &str, e: &io::Error) {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let why = match e.raw_os_error() {
        Some(24) | Some(23) => "out of file descriptors (open files limit)".to_string(),
        _ => e.to_string(),
    };
    tracing::warn!(
        "accept on {listener}: {why}; new connections wait, open ones go on (said at most every {}s)",
        WARN_EVERY.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_fits_the_descriptors() {
        assert_eq!(connections_within(1_048_576, 10_000), 10_000);
        assert_eq!(connections_within(1024, 10_000), (1024 - 64) / 6);
        assert_eq!(connections_within(48, 10_000), 6);
        assert_eq!(connections_within(4, 10_000), 1);
        assert_eq!(connections_within(1024, 3), 3);
    }
}
