//! Stopping a run: SIGINT, SIGTERM or `--duration` start a clean stop; a second signal ends
//! the process at once.

use std::time::Duration;

use tokio::sync::watch;

/// A handle that resolves when the run should stop. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Starts watching signals (and the optional duration). Must be called inside a runtime.
    pub fn install(duration: Option<Duration>) -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            let timer = async {
                match duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = timer => tracing::info!("--duration elapsed: stopping"),
            }
            let _ = tx.send(true);
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            eprintln!("tapline: second signal, stopping now");
            std::process::exit(130);
        });
        Shutdown(rx)
    }

    /// Resolves when a stop is asked for.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
