//! Errors of loading Lua plugins and riff configs.

use std::path::PathBuf;

/// Why a plugin or config could not be used. The messages name the file (and line, for
/// syntax and load-time errors), ready to print as one line.
#[derive(Debug, thiserror::Error)]
pub enum LuaError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A syntax error, or an error raised while the file ran; the message carries `file:line`.
    #[error("{0}")]
    Load(String),
    /// The file ran but is not a usable plugin or config.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A `--plugin-arg` that is not `NAME.key=value`.
    #[error("--plugin-arg {0:?}: expected NAME.key=value")]
    BadArg(String),
}

/// The first line of a Lua error, which carries `file:line: message` (tracebacks dropped).
pub(crate) fn first_line(error: &mlua::Error) -> String {
    let root = root_cause(error);
    let text = match root {
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let line = text.lines().next().unwrap_or("").to_string();
    match (error, lua_location(&line)) {
        // A Rust callback's error has no position; the traceback knows the Lua caller.
        (mlua::Error::CallbackError { traceback, .. }, false) => traceback
            .lines()
            .map(str::trim)
            .find(|l| !l.starts_with("[C]") && !l.starts_with("stack traceback") && !l.is_empty())
            .and_then(|l| l.split(": in ").next())
            .map(|at| format!("{at}: {line}"))
            .unwrap_or(line),
        _ => line,
    }
}

/// Whether an error line already starts with `file:line:`.
fn lua_location(line: &str) -> bool {
    let mut parts = line.splitn(3, ':');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(_), Some(n), Some(_)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    )
}

/// The innermost error of a chain of callback errors and contexts.
fn root_cause(mut error: &mlua::Error) -> &mlua::Error {
    loop {
        match error {
            mlua::Error::CallbackError { cause, .. } => error = cause,
            mlua::Error::WithContext { cause, .. } => error = cause,
            other => return other,
        }
    }
}
