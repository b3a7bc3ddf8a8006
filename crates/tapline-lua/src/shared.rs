//! `tap.shared`: one dictionary shared by every Lua state of a run, with TTLs and atomic
//! increments, called with a colon as OpenResty's `ngx.shared.DICT` is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{UserData, UserDataMethods, Value};
use parking_lot::Mutex;

/// A value stored in the dictionary (what Lua can put there: strings, numbers, booleans).
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Str(Vec<u8>),
    Int(i64),
    Num(f64),
    Bool(bool),
}

#[derive(Debug)]
struct Entry {
    value: Stored,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// The dictionary behind `tap.shared`; clones share the same entries.
#[derive(Debug, Clone, Default)]
pub struct SharedDict(Arc<Mutex<Entries>>);

/// The entries, and how many writes since expired ones were last swept out.
#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    writes: u32,
}

/// Expired entries are swept out every this many writes (reads drop the ones they meet).
const SWEEP_EVERY: u32 = 4096;

impl Entries {
    /// Counts a write, sweeping expired entries now and then so they cannot pile up.
    fn wrote(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes >= SWEEP_EVERY {
            self.writes = 0;
            self.map.retain(|_, e| e.live(now));
        }
    }
}

impl SharedDict {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The integer under `key`, if it is a live integer (for Rust-side checks and tests).
    pub fn get_int(&self, key: &str) -> Option<i64> {
        let now = Instant::now();
        match self.0.lock().map.get(key) {
            Some(e) if e.live(now) => match e.value {
                Stored::Int(i) => Some(i),
                _ => None,
            },
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<Stored> {
        let now = Instant::now();
        let mut entries = self.0.lock();
        match entries.map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                entries.map.remove(key);
                None
            }
            None => None,
        }
    }

    fn set(&self, key: String, value: Option<Stored>, ttl: Option<Duration>) {
        let mut entries = self.0.lock();
        let now = Instant::now();
        entries.wrote(now);
        match value {
            Some(value) => {
                let expires = ttl.map(|t| now + t);
                entries.map.insert(key, Entry { value, expires });
            }
            None => {
                entries.map.remove(&key);
            }
        }
    }

    /// Adds `by` to the number under `key` (a missing or expired key counts as `init`, else
    /// 0) and returns the new value; `None` when the key holds a non-number.
    fn incr(&self, key: String, by: Stored, init: Option<Stored>) -> Option<Stored> {
        let now = Instant::now();
        let mut entries = self.0.lock();
        entries.wrote(now);
        let entry = entries.map.entry(key).or_insert(Entry {
            value: init.clone().unwrap_or(Stored::Int(0)),
            expires: None,
        });
        if !entry.live(now) {
            entry.value = init.unwrap_or(Stored::Int(0));
            entry.expires = None;
        }
        let sum = match (&entry.value, &by) {
            (Stored::Int(a), Stored::Int(b)) => match a.checked_add(*b) {
                Some(s) => Stored::Int(s),
                None => Stored::Num(*a as f64 + *b as f64),
            },
            (Stored::Int(a), Stored::Num(b)) => Stored::Num(*a as f64 + b),
            (Stored::Num(a), Stored::Int(b)) => Stored::Num(a + *b as f64),
            (Stored::Num(a), Stored::Num(b)) => Stored::Num(a + b),
            _ => return None,
        };
        entry.value = sum.clone();
        Some(sum)
    }

    fn keys(&self, max: usize) -> Vec<String> {
        let now = Instant::now();
        let entries = self.0.lock();
        let live = entries
            .map
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| k.clone());
        if max == 0 {
            live.collect()
        } else {
            live.take(max).collect()
        }
    }
}

fn to_stored(value: Value) -> mlua::Result<Option<Stored>> {
    Ok(Some(match value {
        Value::Nil => return Ok(None),
        Value::String(s) => Stored::Str(s.as_bytes().to_vec()),
        Value::Integer(i) => Stored::Int(i),
        Value::Number(n) => Stored::Num(n),
        Value::Boolean(b) => Stored::Bool(b),
        other => {
            return Err(mlua::Error::runtime(format!(
                "tap.shared holds strings, numbers and booleans, not {}",
                other.type_name()
            )))
        }
    }))
}

fn to_lua(lua: &mlua::Lua, value: Option<Stored>) -> mlua::Result<Value> {
    Ok(match value {
        None => Value::Nil,
        Some(Stored::Str(s)) => Value::String(lua.create_string(s)?),
        Some(Stored::Int(i)) => Value::Integer(i),
        Some(Stored::Num(n)) => Value::Number(n),
        Some(Stored::Bool(b)) => Value::Boolean(b),
    })
}

fn ttl(seconds: Option<f64>) -> mlua::Result<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(s) if s > 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(mlua::Error::runtime(format!("tap.shared: bad ttl {s}"))),
    }
}

impl UserData for SharedDict {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, this, key: String| to_lua(lua, this.get(&key)));
        methods.add_method(
            "set",
            |_, this, (key, value, seconds): (String, Value, Option<f64>)| {
                this.set(key, to_stored(value)?, ttl(seconds)?);
                Ok(true)
            },
        );
        methods.add_method(
            "incr",
            |lua, this, (key, by, init): (String, Option<Value>, Option<Value>)| {
                let by = match by {
                    Some(v) => to_stored(v)?,
                    None => Some(Stored::Int(1)),
                };
                let init = match init {
                    Some(v) => to_stored(v)?,
                    None => None,
                };
                match by {
                    Some(by @ (Stored::Int(_) | Stored::Num(_))) => {
                        match this.incr(key, by, init) {
                            Some(v) => Ok((to_lua(lua, Some(v))?, Value::Nil)),
                            None => Ok((
                                Value::Nil,
                                Value::String(lua.create_string("not a number")?),
                            )),
                        }
                    }
                    _ => Err(mlua::Error::runtime(
                        "tap.shared:incr: the step must be a number",
                    )),
                }
            },
        );
        methods.add_method("delete", |_, this, key: String| {
            this.set(key, None, None);
            Ok(())
        });
        methods.add_method("get_keys", |_, this, max: Option<usize>| {
            Ok(this.keys(max.unwrap_or(1024)))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incr_starts_at_zero_and_ttl_expires() {
        let d = SharedDict::new();
        assert_eq!(
            d.incr("a".into(), Stored::Int(2), None),
            Some(Stored::Int(2))
        );
        assert_eq!(
            d.incr("a".into(), Stored::Int(3), None),
            Some(Stored::Int(5))
        );
        d.set("s".into(), Some(Stored::Str(b"x".to_vec())), None);
        assert_eq!(d.incr("s".into(), Stored::Int(1), None), None);
        d.set(
            "t".into(),
            Some(Stored::Int(1)),
            Some(Duration::from_millis(1)),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.get("t"), None);
        assert_eq!(d.get_int("a"), Some(5));
    }

    #[test]
    fn expired_entries_are_swept_by_later_writes() {
        let d = SharedDict::new();
        for i in 0..100 {
            d.set(
                format!("k{i}"),
                Some(Stored::Int(i)),
                Some(Duration::from_millis(1)),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..SWEEP_EVERY {
            d.set("live".into(), Some(Stored::Bool(true)), None);
        }
        assert_eq!(d.0.lock().map.len(), 1);
    }
}
