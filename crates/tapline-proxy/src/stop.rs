//! The phases of stopping: serving, draining (no new connections, in-flight work finishes),
//! forced (whatever is left ends now, as `shutdown`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Where the run is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting and serving.
    Serving,
    /// Finishing in-flight work; idle keep-alive connections close.
    Draining,
    /// Ending everything still open.
    Forced,
}

/// Tells connections the phase. Cheap to clone. The phase is also kept in an atomic, so
/// asking it (every exchange does) takes no lock.
#[derive(Clone)]
pub(crate) struct StopSignal(watch::Receiver<Phase>, Arc<AtomicU8>);

/// Moves the phase on.
pub(crate) struct StopControl(watch::Sender<Phase>, Arc<AtomicU8>);

/// A control and the signal it drives, starting at [`Phase::Serving`].
pub(crate) fn channel() -> (StopControl, StopSignal) {
    let (tx, rx) = watch::channel(Phase::Serving);
    let now = Arc::new(AtomicU8::new(Phase::Serving as u8));
    (StopControl(tx, now.clone()), StopSignal(rx, now))
}

impl StopControl {
    /// Enters `phase`.
    pub(crate) fn enter(&self, phase: Phase) {
        self.1.store(phase as u8, Ordering::Release);
        self.0.send_replace(phase);
    }
}

impl StopSignal {
    /// True once the run reached `phase`.
    pub(crate) fn is(&self, phase: Phase) -> bool {
        self.1.load(Ordering::Acquire) >= phase as u8
    }

    /// Resolves once the run reached `phase`.
    pub(crate) async fn reached(&self, phase: Phase) {
        let mut rx = self.0.clone();
        // An error means the control is gone, which only happens once serving is over.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }
}
