//! The `tap` table every plugin state gets: logging, records and alerts, verdict
//! constructors, time, hex, JSON, and the shared dictionary.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mlua::serde::{DeserializeOptions, SerializeOptions};
use mlua::{Lua, LuaSerdeExt, Table, UserData, Value};
use parking_lot::Mutex;
use tapline_core::{
    Event, EventKind, EventSink, Flow, Headers, HttpResponse, Mode, PgError, Record, Timestamp,
};

use crate::shared::SharedDict;

/// What a hook asked for beyond passing the event on (built by `tap.hold`, `tap.close`,
/// `tap.respond`, `tap.pg_error`, `tap.delay`).
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// `tap.hold()`: forward nothing now.
    Hold,
    /// `tap.close(reason)`: close the flow.
    Close(String),
    /// `tap.respond{…}`: answer (request) or replace (response).
    Respond(HttpResponse),
    /// `tap.pg_error{code=, message=, severity=}`: answer a PostgreSQL client's message.
    PgError(PgError),
    /// `tap.delay(ms)`: hold the event that long, then pass it.
    Delay(Duration),
}

impl UserData for Verdict {}

/// What the `tap` functions of one state need to know about the run and the call in progress.
pub(crate) struct Emitter {
    /// The plugin's name (its `name` field once loaded, the file stem before).
    pub(crate) plugin: Mutex<Arc<str>>,
    /// Where records and alerts go.
    pub(crate) sink: Arc<dyn EventSink>,
    /// Proxy or capture.
    pub(crate) mode: Mode,
    /// The flow of the event being handled, if any.
    pub(crate) flow: Mutex<Option<Arc<Flow>>>,
}

impl Emitter {
    fn send(&self, kind: EventKind) {
        let flow = self.flow.lock().clone();
        let event = Event {
            ts: Timestamp::now(),
            mode: self.mode,
            flow,
            kind,
        };
        self.sink.emit(&event);
    }

    fn plugin(&self) -> String {
        self.plugin.lock().to_string()
    }
}

/// Options for turning JSON-like Rust values into Lua: SQL NULL and JSON null become `nil`.
pub(crate) fn to_lua_options() -> SerializeOptions {
    SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
}

/// A Lua value as JSON (functions and other non-data values are skipped).
pub(crate) fn to_json(lua: &Lua, value: Value) -> mlua::Result<serde_json::Value> {
    lua.from_value_with(
        value,
        DeserializeOptions::new().deny_unsupported_types(false),
    )
}

/// The fields of a record or alert: a table as a JSON object (`{}` when absent or empty).
fn fields_json(lua: &Lua, fields: Option<Table>) -> mlua::Result<serde_json::Value> {
    match fields {
        Some(t) if !t.is_empty() => to_json(lua, Value::Table(t)),
        _ => Ok(serde_json::Value::Object(Default::default())),
    }
}

/// Builds the `tap` table for one state and sets it as a global.
pub(crate) fn install(lua: &Lua, emitter: Arc<Emitter>, shared: SharedDict) -> mlua::Result<()> {
    let tap = lua.create_table()?;

    let e = emitter.clone();
    tap.set(
        "log",
        lua.create_function(move |_, (level, msg): (String, Value)| {
            let text = display(&msg);
            let plugin = e.plugin();
            match level.to_ascii_lowercase().as_str() {
                "error" | "err" => tracing::error!("lua {plugin}: {text}"),
                "warn" | "warning" => tracing::warn!("lua {plugin}: {text}"),
                "debug" => tracing::debug!("lua {plugin}: {text}"),
                "trace" => tracing::trace!("lua {plugin}: {text}"),
                _ => tracing::info!("lua {plugin}: {text}"),
            }
            Ok(())
        })?,
    )?;

    let e = emitter.clone();
    tap.set(
        "emit",
        lua.create_function(move |lua, fields: Option<Table>| {
            let fields = fields_json(lua, fields)?;
            let message = fields
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string();
            e.send(EventKind::Record(Record {
                plugin: e.plugin(),
                message,
                fields,
            }));
            Ok(())
        })?,
    )?;

    let e = emitter;
    tap.set(
        "alert",
        lua.create_function(move |lua, (msg, fields): (Value, Option<Table>)| {
            let fields = fields_json(lua, fields)?;
            e.send(EventKind::Alert(Record {
                plugin: e.plugin(),
                message: display(&msg),
                fields,
            }));
            Ok(())
        })?,
    )?;

    tap.set(
        "respond",
        lua.create_function(|_, spec: Table| Ok(Verdict::Respond(response_from(&spec)?)))?,
    )?;
    tap.set("hold", lua.create_function(|_, ()| Ok(Verdict::Hold))?)?;
    tap.set(
        "pg_error",
        lua.create_function(|_, spec: Table| Ok(Verdict::PgError(pg_error_from(&spec)?)))?,
    )?;
    tap.set(
        "delay",
        lua.create_function(|_, ms: f64| {
            if !(ms.is_finite() && (0.0..=MAX_DELAY_MS).contains(&ms)) {
                return Err(mlua::Error::runtime(format!(
                    "tap.delay: {ms} ms is not between 0 and {MAX_DELAY_MS}"
                )));
            }
            Ok(Verdict::Delay(Duration::from_secs_f64(ms / 1000.0)))
        })?,
    )?;
    tap.set(
        "close",
        lua.create_function(|_, reason: Option<String>| {
            Ok(Verdict::Close(
                reason.unwrap_or_else(|| "closed by plugin".into()),
            ))
        })?,
    )?;
    tap.set(
        "now",
        lua.create_function(|_, ()| Ok(Timestamp::now().as_secs_f64()))?,
    )?;
    tap.set(
        "hex",
        lua.create_function(|_, s: mlua::LuaString| Ok(hex(&s.as_bytes())))?,
    )?;

    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let value = to_json(lua, v)?;
            serde_json::to_string(&value).map_err(mlua::Error::external)
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let value: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("tap.json.decode: {e}")))?;
            lua.to_value_with(&value, to_lua_options())
        })?,
    )?;
    tap.set("json", json)?;
    tap.set("shared", shared)?;
    lua.globals().set("tap", tap)?;
    disable_exit(lua)
}

/// Replaces `os.exit` by an error: a plugin must not stop the process carrying the traffic.
fn disable_exit(lua: &Lua) -> mlua::Result<()> {
    if let Ok(os) = lua.globals().get::<Table>("os") {
        os.set(
            "exit",
            lua.create_function(|_, ()| -> mlua::Result<()> {
                Err(mlua::Error::runtime(
                    "os.exit is disabled in tapline plugins",
                ))
            })?,
        )?;
    }
    Ok(())
}

/// The longest `tap.delay` (an hour): longer is a mistake, not a fault to rehearse.
const MAX_DELAY_MS: f64 = 3_600_000.0;

/// An error from `tap.pg_error{code = "40001", message = "…", severity = "ERROR"}`; the
/// code must be a SQLSTATE, the message is required, the severity defaults to `ERROR`.
fn pg_error_from(spec: &Table) -> mlua::Result<PgError> {
    let code: String = spec
        .get::<Option<String>>("code")?
        .ok_or_else(|| mlua::Error::runtime("tap.pg_error: code (a SQLSTATE) is required"))?;
    if !PgError::valid_code(&code) {
        return Err(mlua::Error::runtime(format!(
            "tap.pg_error: code '{code}' is not a SQLSTATE (five digits or capital letters)"
        )));
    }
    let message: String = spec
        .get::<Option<String>>("message")?
        .unwrap_or_else(|| format!("tapline: injected error {code}"));
    let severity = spec
        .get::<Option<String>>("severity")?
        .unwrap_or_else(|| "ERROR".to_string())
        .to_ascii_uppercase();
    Ok(PgError {
        severity,
        code,
        message,
    })
}

/// A response from `tap.respond{status=…, headers=…, body=…}`. Headers may be a map
/// (`{["Content-Type"]="text/plain"}`, a list value adds the field once per item) or a list
/// of `{name, value}` pairs, which keeps their order.
fn response_from(spec: &Table) -> mlua::Result<HttpResponse> {
    let status: Option<u16> = spec.get("status")?;
    let status = status.unwrap_or(200);
    if !(100..=999).contains(&status) {
        return Err(mlua::Error::runtime(format!(
            "tap.respond: bad status {status}"
        )));
    }
    let mut headers = Headers::new();
    if let Some(list) = spec.get::<Option<Table>>("headers")? {
        for pair in list.pairs::<Value, Value>() {
            let (key, value) = pair?;
            match (key, value) {
                (Value::Integer(_), Value::Table(nv)) => {
                    headers.add(nv.get::<String>(1)?, nv.get::<String>(2)?);
                }
                (Value::String(name), Value::Table(values)) => {
                    for v in values.sequence_values::<String>() {
                        headers.add(name.to_str()?.to_string(), v?);
                    }
                }
                (Value::String(name), v) => {
                    headers.add(name.to_str()?.to_string(), display(&v));
                }
                _ => return Err(mlua::Error::runtime("tap.respond: bad headers")),
            }
        }
    }
    let body = match spec.get::<Option<mlua::LuaString>>("body")? {
        Some(b) => Bytes::copy_from_slice(&b.as_bytes()),
        None => Bytes::new(),
    };
    let mut response = HttpResponse::new(status, headers, body);
    if let Some(reason) = spec.get::<Option<String>>("reason")? {
        response.reason = reason;
    }
    Ok(response)
}

/// A Lua value as text, as `tostring` would show plain values.
pub(crate) fn display(value: &Value) -> String {
    match value {
        Value::Nil => String::new(),
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Lowercase hex of some bytes.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
