//! [`Slot`]: one worker's place in a plugin: the state of the version in use, and the states
//! of replaced versions for as long as they hold the `flow.state` of flows in progress.
//!
//! A reload swaps the state of each slot under the slot's lock, the lock every hook call takes
//! anyway, so a call sees either the old version or the new one, never a mix. A flow that
//! started on an older version moves to the new one at its next event: its `flow.state` is
//! copied into the new state (the tables cannot be shared: each version is its own Lua
//! state), then the old state forgets the flow. All of it happens under that same lock.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ops::{Deref, DerefMut};

use mlua::{Lua, Table, Value};
use tapline_core::{Flow, HookFailure};

use crate::state::PluginState;

/// Replaced versions kept per slot for their flows in progress; past this, the oldest is
/// dropped (its flows start over with an empty `flow.state`).
const MAX_RETIRED: usize = 4;

/// A worker's states: the current version and the replaced ones still holding flows.
pub(crate) struct Slot {
    current: PluginState,
    /// Replaced versions, oldest first; each holds at least one flow's table.
    retired: Vec<PluginState>,
}

impl Deref for Slot {
    type Target = PluginState;
    fn deref(&self) -> &PluginState {
        &self.current
    }
}

impl DerefMut for Slot {
    fn deref_mut(&mut self) -> &mut PluginState {
        &mut self.current
    }
}

impl Slot {
    /// A slot running `state`.
    pub(crate) fn new(state: PluginState) -> Slot {
        Slot {
            current: state,
            retired: Vec::new(),
        }
    }

    /// The table of `flow` in the current state; a flow that started on a replaced version
    /// brings its `flow.state` along.
    pub(crate) fn flow_table(&mut self, flow: &Flow) -> mlua::Result<Table> {
        if !self.retired.is_empty() {
            self.adopt(flow)?;
        }
        self.current.flow_table(flow)
    }

    /// Forgets `flow` in every state of the slot.
    pub(crate) fn drop_flow(&mut self, flow: &Flow) {
        self.current.drop_flow(flow);
        if !self.retired.is_empty() {
            for old in &mut self.retired {
                old.drop_flow(flow);
            }
            self.retired.retain(PluginState::has_flows);
        }
    }

    /// Puts `state` in use. The replaced state's `on_stop` runs (its answer is returned) and
    /// the state stays, without running hooks, while it holds tables of flows in progress.
    pub(crate) fn replace(&mut self, state: PluginState) -> Result<(), HookFailure> {
        let old = std::mem::replace(&mut self.current, state);
        let stopped = old.stop();
        if old.has_flows() {
            self.retired.push(old);
        }
        if self.retired.len() > MAX_RETIRED {
            self.retired.remove(0);
            tracing::warn!(
                "lua {}: more than {MAX_RETIRED} reloads while flows were open; the oldest \
                 flows' flow.state starts over",
                self.current.emitter.plugin.lock()
            );
        }
        stopped
    }

    /// Moves `flow`'s `flow.state` from the newest replaced state holding it into the current
    /// state (unless the current state already has the flow).
    fn adopt(&mut self, flow: &Flow) -> mlua::Result<()> {
        if self.current.has_flow(flow) {
            return Ok(());
        }
        let Some(old) = self
            .retired
            .iter_mut()
            .rev()
            .find_map(|state| state.drop_flow(flow))
        else {
            return Ok(());
        };
        let table = self.current.flow_table(flow)?;
        let copied = old
            .raw_get("state")
            .and_then(|state| copy_value(&self.current.lua, state, &mut HashMap::new()));
        // Only now may a replaced state without flows go: `old` lives in it.
        drop(old);
        self.retired.retain(PluginState::has_flows);
        if let Value::Table(state) = copied? {
            table.raw_set("state", state)?;
        }
        Ok(())
    }
}

/// Copies a value into another Lua state: strings, numbers, booleans and tables (keys and
/// values, shared and cyclic references kept as such); functions, userdata, threads and
/// metatables do not cross states and are left out.
fn copy_value(
    to: &Lua,
    value: Value,
    seen: &mut HashMap<*const c_void, Table>,
) -> mlua::Result<Value> {
    Ok(match value {
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::Number(_) => value,
        Value::String(s) => Value::String(to.create_string(s.as_bytes())?),
        Value::Table(t) => {
            if let Some(copy) = seen.get(&t.to_pointer()) {
                return Ok(Value::Table(copy.clone()));
            }
            let copy = to.create_table()?;
            seen.insert(t.to_pointer(), copy.clone());
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let k = copy_value(to, k, seen)?;
                let v = copy_value(to, v, seen)?;
                if !k.is_nil() && !v.is_nil() {
                    copy.raw_set(k, v)?;
                }
            }
            Value::Table(copy)
        }
        _ => Value::Nil,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_plain_data_and_keeps_shared_and_cyclic_tables() {
        let from = Lua::new();
        let to = Lua::new();
        let value: Value = from
            .load(
                r#"
                local shared = { n = 1 }
                local t = { a = "x", b = 2.5, c = true, [3] = shared, d = shared,
                            f = function() end, u = io.stdout }
                t.self = t
                return t
                "#,
            )
            .eval()
            .unwrap();
        let copy = copy_value(&to, value, &mut HashMap::new()).unwrap();
        to.globals().set("t", copy).unwrap();
        let ok: bool = to
            .load(
                r#"return t.a == "x" and t.b == 2.5 and t.c == true and t[3] == t.d
                   and t.d.n == 1 and t.self == t and t.f == nil and t.u == nil"#,
            )
            .eval()
            .unwrap();
        assert!(ok);
    }
}
