//! What can go wrong talking to a gRPC plugin.

use std::time::Duration;

/// A failed plugin address, connection or call.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The `--grpc-plugin` value is not a usable `http://HOST:PORT` address.
    #[error("{url}: {reason}")]
    InvalidAddress {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made to the plugin.
    #[error("cannot connect to {url}: {}", with_causes(.source))]
    Unreachable {
        /// The plugin's address.
        url: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The plugin answered a call with a gRPC error (or the connection broke during it).
    #[error("{rpc} failed: {}", status_text(.status))]
    Status {
        /// The rpc that failed.
        rpc: &'static str,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The plugin did not answer in time.
    #[error("{rpc} timed out after {}ms", .after.as_millis())]
    Timeout {
        /// The rpc that timed out.
        rpc: &'static str,
        /// The time limit.
        after: Duration,
    },
    /// The plugin answered with something tapline cannot act on (no action, unknown enum).
    #[error("{rpc} answered without a usable action: {what}")]
    BadAnswer {
        /// The rpc.
        rpc: &'static str,
        /// What was missing or wrong.
        what: String,
    },
    /// The plugin answered `HealthCheck` with `healthy = false`.
    #[error("it reports itself unhealthy: {0:?}")]
    Unhealthy(String),
    /// The plugin client was started outside a tokio runtime.
    #[error("gRPC plugins need a tokio runtime")]
    NoRuntime,
}

impl GrpcError {
    /// True when the error says the plugin is not there (connection refused or lost), as
    /// opposed to a plugin that answered badly or slowly.
    pub fn is_unavailable(&self) -> bool {
        match self {
            GrpcError::Unreachable { .. } => true,
            GrpcError::Status { status, .. } => status.code() == tonic::Code::Unavailable,
            _ => false,
        }
    }

    /// True for a call that ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, GrpcError::Timeout { .. })
    }
}

/// An error and its causes, `outer: inner: root` (tonic's transport errors say little alone).
fn with_causes(error: &dyn std::error::Error) -> String {
    append_causes(error.to_string(), error.source())
}

/// `text`, then each cause in turn that it does not already say.
fn append_causes(mut text: String, mut cause: Option<&dyn std::error::Error>) -> String {
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = e.source();
    }
    text
}

fn status_text(status: &tonic::Status) -> String {
    let message = append_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    );
    format!("{message} ({})", status.code())
}
