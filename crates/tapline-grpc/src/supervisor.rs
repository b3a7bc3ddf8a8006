//! The health supervisor: one task per plugin polling `HealthCheck`, disabling a plugin that
//! stops answering and enabling (after fetching its description again) one that answers.

use std::sync::Weak;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;

use crate::error::GrpcError;
use crate::plugin::Plugin;

/// Starts supervising `plugin` every `every` on `runtime`; the task ends when the plugin is
/// dropped.
pub(crate) fn spawn(plugin: Weak<Plugin>, every: Duration, runtime: &Handle) {
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(plugin) = plugin.upgrade() else {
                return;
            };
            check(&plugin).await;
        }
    });
}

async fn check(plugin: &Plugin) {
    match plugin.remote().health().await {
        Ok(health) if health.healthy => {
            if !plugin.is_online() {
                match plugin.refresh().await {
                    Ok(true) => tracing::warn!(
                        plugin = plugin.name(),
                        "gRPC plugin at {} is answering: enabled",
                        plugin.address()
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(plugin = plugin.name(), "still offline: {e}"),
                }
            }
        }
        Ok(health) => plugin.disable(&GrpcError::Unhealthy(health.message)),
        Err(e) => plugin.disable(&e),
    }
}
