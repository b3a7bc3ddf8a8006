//! Requests, responses and their headers as Lua objects that edit the real messages in
//! place: each hook call lends the message to a state's reusable object and takes it back,
//! and the first edit keeps a copy so a hook that fails leaves the message unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use mlua::{AnyUserData, Lua, MetaMethod, Table, UserData, UserDataMethods, Value};
use parking_lot::Mutex;
use tapline_core::http::SmolStr;
use tapline_core::{Headers, HttpRequest, HttpResponse};

use crate::api::display;
use crate::objects::millis;

/// A message lent to Lua for one hook call. The first edit keeps a copy of what it changes —
/// the headers for a header method, the whole message otherwise — so a hook that fails leaves
/// the message unchanged.
#[derive(Default)]
pub(crate) struct Edit<T> {
    value: T,
    /// The message before the first edit of a field other than the headers.
    backup: Option<T>,
    /// The headers before their first edit.
    headers_backup: Option<Headers>,
}

/// The message shared by a request or response object and its headers object.
pub(crate) type Lent<T> = Arc<Mutex<Edit<T>>>;

/// A state's reusable Lua object for requests or responses: each hook call lends the message
/// to it and takes it back, so no Lua object is built per call. The object (and its headers
/// object) is only meaningful during the call.
pub(crate) struct Slot<T> {
    lent: Lent<T>,
    object: AnyUserData,
}

impl<T: Default> Slot<T> {
    /// Lends `value` to the slot's object (it is taken out of its place until
    /// [`Slot::give_back`]) and returns the object to pass to the hook.
    pub(crate) fn lend(&self, value: &mut T) -> AnyUserData {
        *self.lent.lock() = Edit {
            value: std::mem::take(value),
            backup: None,
            headers_backup: None,
        };
        self.object.clone()
    }
}

impl<T: HasHeaders> Slot<T> {
    /// Puts the lent message back: edited when `keep_edits`, else as it was before the hook.
    pub(crate) fn give_back(&self, place: &mut T, keep_edits: bool) {
        let edit = std::mem::take(&mut *self.lent.lock());
        *place = edit.value;
        if keep_edits {
            return;
        }
        if let Some(original) = edit.backup {
            *place = original;
        }
        if let Some(headers) = edit.headers_backup {
            *place.headers_mut() = headers;
        }
    }
}

impl Slot<HttpRequest> {
    /// The `req` object of a state.
    pub(crate) fn request(lua: &Lua) -> mlua::Result<Self> {
        let lent = Lent::default();
        let headers = lua.create_userdata(HeadersObj(Arc::clone(&lent)))?;
        let object = lua.create_userdata(RequestObj {
            lent: Arc::clone(&lent),
            headers,
        })?;
        Ok(Slot { lent, object })
    }
}

impl Slot<HttpResponse> {
    /// The `resp` object of a state.
    pub(crate) fn response(lua: &Lua) -> mlua::Result<Self> {
        let lent = Lent::default();
        let headers = lua.create_userdata(HeadersObj(Arc::clone(&lent)))?;
        let object = lua.create_userdata(ResponseObj {
            lent: Arc::clone(&lent),
            headers,
        })?;
        Ok(Slot { lent, object })
    }
}

/// Edits a field of the lent message other than its headers (the message is backed up first).
fn write<T: Clone, R>(lent: &Lent<T>, f: impl FnOnce(&mut T) -> R) -> R {
    let mut edit = lent.lock();
    if edit.backup.is_none() {
        edit.backup = Some(edit.value.clone());
    }
    f(&mut edit.value)
}

/// Edits the lent message's headers (only they are backed up first, unless the whole message
/// already was).
fn write_headers<T: HasHeaders, R>(lent: &Lent<T>, f: impl FnOnce(&mut Headers) -> R) -> R {
    let mut edit = lent.lock();
    if edit.backup.is_none() && edit.headers_backup.is_none() {
        edit.headers_backup = Some(edit.value.headers().clone());
    }
    f(edit.value.headers_mut())
}

fn read<T, R>(lent: &Lent<T>, f: impl FnOnce(&T) -> R) -> R {
    f(&lent.lock().value)
}

/// Messages that carry header fields.
pub(crate) trait HasHeaders: Clone + Default + Send + 'static {
    /// The fields.
    fn headers(&self) -> &Headers;
    /// The fields, to edit.
    fn headers_mut(&mut self) -> &mut Headers;
}

impl HasHeaders for HttpRequest {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

impl HasHeaders for HttpResponse {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

/// `req.headers` / `resp.headers`: ordered fields with duplicates, names case-insensitive.
struct HeadersObj<T>(Lent<T>);

fn check_name(name: &str) -> mlua::Result<()> {
    if !tapline_core::http::is_token(name) {
        return Err(mlua::Error::runtime(format!("bad header name {name:?}")));
    }
    Ok(())
}

fn check_value(value: &str) -> mlua::Result<()> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(mlua::Error::runtime(
            "a header value may not hold CR, LF or NUL",
        ));
    }
    Ok(())
}

/// A header value from Lua: a string as it is (kept inline when short, without a copy into
/// a Rust `String` first), anything else as `tostring` shows it; checked for line breaks.
fn field_value(value: &Value) -> mlua::Result<SmolStr> {
    let value = match value {
        Value::String(s) => match s.to_str() {
            Ok(text) => SmolStr::new(&*text),
            Err(_) => SmolStr::new(s.to_string_lossy()),
        },
        other => SmolStr::new(display(other)),
    };
    check_value(&value)?;
    Ok(value)
}

impl<T: HasHeaders> UserData for HeadersObj<T> {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            read(&this.0, |m| match m.headers().get(&name) {
                Some(v) => lua.create_string(v).map(Value::String),
                None => Ok(Value::Nil),
            })
        });
        methods.add_method("get_all", |lua, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            read(&this.0, |m| {
                lua.create_sequence_from(
                    m.headers()
                        .get_all(&name)
                        .map(|v| lua.create_string(v))
                        .collect::<mlua::Result<Vec<_>>>()?,
                )
            })
        });
        methods.add_method("set", |_, this, (name, value): (mlua::LuaString, Value)| {
            let name = name.to_str()?;
            check_name(&name)?;
            if value.is_nil() {
                write_headers(&this.0, |h| h.remove(&name));
                return Ok(());
            }
            let value = field_value(&value)?;
            write_headers(&this.0, |h| h.set(&name, value));
            Ok(())
        });
        methods.add_method("add", |_, this, (name, value): (mlua::LuaString, Value)| {
            let name = name.to_str()?;
            check_name(&name)?;
            let value = field_value(&value)?;
            write_headers(&this.0, |h| h.add(SmolStr::new(&*name), value));
            Ok(())
        });
        methods.add_method("remove", |_, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            Ok(write_headers(&this.0, |h| h.remove(&name)))
        });
        methods.add_method("pairs", |lua, this, ()| {
            let fields = read(&this.0, |m| m.headers().0.clone());
            let next = AtomicUsize::new(0);
            lua.create_function(move |lua, ()| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                Ok(match fields.get(i) {
                    Some((n, v)) => (
                        Value::String(lua.create_string(n)?),
                        Value::String(lua.create_string(v)?),
                    ),
                    None => (Value::Nil, Value::Nil),
                })
            })
        });
        methods.add_meta_method(MetaMethod::Len, |_, this, ()| {
            Ok(read(&this.0, |m| m.headers().len()))
        });
    }
}

/// Replaces every field from a Lua list of `{name, value}` pairs or a name→value map.
fn replace_headers(headers: &mut Headers, table: &Table) -> mlua::Result<()> {
    let mut fresh = Headers::new();
    for pair in table.pairs::<Value, Value>() {
        match pair? {
            (Value::Integer(_), Value::Table(nv)) => {
                let (n, v): (String, String) = (nv.get(1)?, nv.get(2)?);
                check_name(&n)?;
                check_value(&v)?;
                fresh.add(n, v);
            }
            (Value::String(n), v) => {
                let n = n.to_str()?.to_string();
                check_name(&n)?;
                fresh.add(n, field_value(&v)?);
            }
            _ => {
                return Err(mlua::Error::runtime(
                    "headers must be {name, value} pairs or a map",
                ))
            }
        }
    }
    *headers = fresh;
    Ok(())
}

fn body_from(value: Value) -> mlua::Result<Bytes> {
    match value {
        Value::Nil => Ok(Bytes::new()),
        Value::String(s) => Ok(Bytes::copy_from_slice(&s.as_bytes())),
        other => Err(mlua::Error::runtime(format!(
            "a body must be a string, not {}",
            other.type_name()
        ))),
    }
}

fn text(value: Value, field: &str) -> mlua::Result<String> {
    match value {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        other => Err(mlua::Error::runtime(format!(
            "{field} must be a string, not {}",
            other.type_name()
        ))),
    }
}

/// `req`: reads and in-place edits of an HTTP request.
struct RequestObj {
    lent: Lent<HttpRequest>,
    headers: AnyUserData,
}

impl UserData for RequestObj {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::LuaString| {
            let key = key.as_bytes();
            let lent = &this.lent;
            Ok(match &*key {
                b"method" => read(lent, |r| lua.create_string(&r.method)).map(Value::String)?,
                b"path" => read(lent, |r| lua.create_string(&r.path)).map(Value::String)?,
                b"url" => match read(lent, |r| r.url.clone()) {
                    Some(u) => Value::String(lua.create_string(u)?),
                    None => Value::Nil,
                },
                b"version" => read(lent, |r| lua.create_string(&r.version)).map(Value::String)?,
                b"headers" => Value::UserData(this.headers.clone()),
                b"body" => read(lent, |r| lua.create_string(&r.body)).map(Value::String)?,
                b"body_truncated" => Value::Boolean(read(lent, |r| r.body_truncated)),
                b"body_len" => Value::Integer(read(lent, |r| r.body_len) as i64),
                _ => Value::Nil,
            })
        });
        methods.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, value): (String, Value)| {
                let lent = &this.lent;
                match key.as_str() {
                    "method" => {
                        let m = text(value, "req.method")?;
                        write(lent, |r| r.method = m)
                    }
                    "path" => {
                        let p = text(value, "req.path")?;
                        write(lent, |r| r.path = p)
                    }
                    "url" => {
                        let u = match value {
                            Value::Nil => None,
                            v => Some(text(v, "req.url")?),
                        };
                        write(lent, |r| r.url = u)
                    }
                    "version" => {
                        let v = text(value, "req.version")?;
                        write(lent, |r| r.version = v)
                    }
                    "body" => {
                        let b = body_from(value)?;
                        write(lent, |r| r.set_body(b))
                    }
                    "headers" => match value {
                        Value::Table(t) => write(lent, |r| replace_headers(&mut r.headers, &t))?,
                        _ => return Err(mlua::Error::runtime("req.headers must be a table")),
                    },
                    other => {
                        return Err(mlua::Error::runtime(format!("req.{other} cannot be set")))
                    }
                }
                Ok(())
            },
        );
    }
}

/// `resp`: reads and in-place edits of an HTTP response.
struct ResponseObj {
    lent: Lent<HttpResponse>,
    headers: AnyUserData,
}

impl UserData for ResponseObj {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::LuaString| {
            let key = key.as_bytes();
            let lent = &this.lent;
            Ok(match &*key {
                b"status" => Value::Integer(read(lent, |r| r.status) as i64),
                b"reason" => read(lent, |r| lua.create_string(&r.reason)).map(Value::String)?,
                b"version" => read(lent, |r| lua.create_string(&r.version)).map(Value::String)?,
                b"headers" => Value::UserData(this.headers.clone()),
                b"body" => read(lent, |r| lua.create_string(&r.body)).map(Value::String)?,
                b"body_truncated" => Value::Boolean(read(lent, |r| r.body_truncated)),
                b"body_len" => Value::Integer(read(lent, |r| r.body_len) as i64),
                b"latency_ms" => match read(lent, |r| r.latency) {
                    Some(l) => Value::Number(millis(l)),
                    None => Value::Nil,
                },
                b"request" => match read(lent, |r| r.request.clone()) {
                    Some(line) => {
                        let t = lua.create_table_with_capacity(0, 3)?;
                        t.raw_set("method", line.method)?;
                        t.raw_set("path", line.path)?;
                        t.raw_set("url", line.url)?;
                        Value::Table(t)
                    }
                    None => Value::Nil,
                },
                _ => Value::Nil,
            })
        });
        methods.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, value): (String, Value)| {
                let lent = &this.lent;
                match key.as_str() {
                    "status" => {
                        let status = match value {
                            Value::Integer(s) if (100..=999).contains(&s) => s as u16,
                            other => {
                                return Err(mlua::Error::runtime(format!(
                                    "resp.status must be 100..999, not {}",
                                    display(&other)
                                )))
                            }
                        };
                        write(lent, |r| {
                            r.status = status;
                            r.reason = tapline_core::http::reason_phrase(status).to_string();
                        })
                    }
                    "reason" => {
                        let reason = text(value, "resp.reason")?;
                        check_value(&reason)?;
                        write(lent, |r| r.reason = reason)
                    }
                    "body" => {
                        let b = body_from(value)?;
                        write(lent, |r| r.set_body(b))
                    }
                    "headers" => match value {
                        Value::Table(t) => write(lent, |r| replace_headers(&mut r.headers, &t))?,
                        _ => return Err(mlua::Error::runtime("resp.headers must be a table")),
                    },
                    other => {
                        return Err(mlua::Error::runtime(format!("resp.{other} cannot be set")))
                    }
                }
                Ok(())
            },
        );
    }
}
