//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

use std::fmt;
use std::process::ExitCode;

/// A usage or configuration error: bad flag value, mapping, filter, plugin file. Exits 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns early with a [`UsageError`] built like `format!`.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// Prints the error as one line on stderr and picks the exit code from its kind.
pub fn report(error: &anyhow::Error) -> ExitCode {
    let usage = error.chain().any(|e| e.is::<UsageError>());
    eprintln!("tapline: {}", one_line(error));
    ExitCode::from(if usage { 2 } else { 1 })
}

/// The error and its causes on one line, `outer: inner: root`, without repeats.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text.replace('\n', " "));
        }
    }
    parts.join(": ")
}
