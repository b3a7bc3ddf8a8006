//! One Lua state of a plugin: the loaded file, its hooks, its flow tables, its budget.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, Table, Value};
use tapline_core::{Flow, HookFailure, HttpRequest, HttpResponse, Kind, KindSet};

use crate::api::{self, Emitter};
use crate::budget::Budget;
use crate::error::{first_line, LuaError};
use crate::lent::Slot;
use crate::riff::Chain;
use crate::shared::SharedDict;

/// Flow tables kept per state before the oldest are dropped (flows whose end never came).
const MAX_FLOWS: usize = 100_000;

/// The hook names a plugin may define, in the order `plugins check` prints them.
pub(crate) const HOOK_NAMES: [&str; 10] = [
    "on_start",
    "on_stop",
    "on_flow_start",
    "on_flow_end",
    "on_packet",
    "on_data",
    "on_request",
    "on_response",
    "on_message",
    "on_transaction",
];

/// A plugin's hook functions as found in the table its file returned.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_start: Option<Function>,
    pub(crate) on_stop: Option<Function>,
    pub(crate) on_flow_start: Option<Function>,
    pub(crate) on_flow_end: Option<Function>,
    pub(crate) on_packet: Option<Function>,
    pub(crate) on_data: Option<Function>,
    pub(crate) on_request: Option<Function>,
    pub(crate) on_response: Option<Function>,
    pub(crate) on_message: Option<Function>,
    pub(crate) on_transaction: Option<Function>,
}

impl Hooks {
    fn from_table(t: &Table) -> mlua::Result<Hooks> {
        let f = |name: &str| -> mlua::Result<Option<Function>> {
            match t.get::<Value>(name)? {
                Value::Function(f) => Ok(Some(f)),
                _ => Ok(None),
            }
        };
        Ok(Hooks {
            on_start: f("on_start")?,
            on_stop: f("on_stop")?,
            on_flow_start: f("on_flow_start")?,
            on_flow_end: f("on_flow_end")?,
            on_packet: f("on_packet")?,
            on_data: f("on_data")?,
            on_request: f("on_request")?,
            on_response: f("on_response")?,
            on_message: f("on_message")?,
            on_transaction: f("on_transaction")?,
        })
    }

    /// The names of the hooks defined, in [`HOOK_NAMES`] order.
    pub(crate) fn defined(&self) -> Vec<&'static str> {
        let present = [
            self.on_start.is_some(),
            self.on_stop.is_some(),
            self.on_flow_start.is_some(),
            self.on_flow_end.is_some(),
            self.on_packet.is_some(),
            self.on_data.is_some(),
            self.on_request.is_some(),
            self.on_response.is_some(),
            self.on_message.is_some(),
            self.on_transaction.is_some(),
        ];
        HOOK_NAMES
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Which hooks a plugin version defines (the same in every state), to answer `interest`
/// cheaply.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Defined {
    pub(crate) flow_start: bool,
    pub(crate) flow_end: bool,
    pub(crate) packet: bool,
    pub(crate) data: bool,
    pub(crate) request: bool,
    pub(crate) response: bool,
    pub(crate) message: bool,
    pub(crate) transaction: bool,
    pub(crate) riff: bool,
}

impl Defined {
    /// The observe-only events the plugin has a use for: those it has a hook for, and the
    /// ends of flows whose table it keeps.
    pub(crate) fn observed(&self) -> KindSet {
        let mut kinds = KindSet::EMPTY;
        let mut add = |on: bool, kind: Kind| {
            if on {
                kinds = kinds.with(kind);
            }
        };
        add(self.flow_start, Kind::FlowStart);
        add(self.transaction, Kind::Transaction);
        // Any per-flow hook keeps a flow table, dropped at the flow's end.
        let per_flow = self.flow_start
            || self.flow_end
            || self.packet
            || self.data
            || self.request
            || self.response
            || self.message
            || self.transaction;
        add(per_flow, Kind::FlowEnd);
        kinds
    }
}

impl Defined {
    fn of(h: &Hooks, riff: bool) -> Defined {
        Defined {
            flow_start: h.on_flow_start.is_some(),
            flow_end: h.on_flow_end.is_some(),
            packet: h.on_packet.is_some(),
            data: h.on_data.is_some(),
            request: h.on_request.is_some(),
            response: h.on_response.is_some(),
            message: h.on_message.is_some(),
            transaction: h.on_transaction.is_some(),
            riff,
        }
    }
}

/// What a state needs from its host to be built.
pub(crate) struct StateSetup<'a> {
    pub(crate) path: &'a Path,
    pub(crate) source: &'a [u8],
    pub(crate) emitter: Arc<Emitter>,
    pub(crate) shared: SharedDict,
    pub(crate) budget: Duration,
}

/// One Lua state running one plugin.
pub(crate) struct PluginState {
    pub(crate) lua: Lua,
    pub(crate) hooks: Hooks,
    pub(crate) riff: Option<Chain>,
    /// Which hooks `hooks` and `riff` hold.
    pub(crate) defined: Defined,
    /// The table the plugin file returned.
    pub(crate) module: Table,
    pub(crate) emitter: Arc<Emitter>,
    /// The reusable `req` and `resp` objects.
    pub(crate) request_slot: Slot<HttpRequest>,
    pub(crate) response_slot: Slot<HttpResponse>,
    budget: Arc<Budget>,
    flows: HashMap<u64, Table>,
}

impl PluginState {
    /// Runs the plugin file in a fresh state.
    pub(crate) fn load(setup: StateSetup<'_>) -> Result<PluginState, LuaError> {
        let load_err = |e: mlua::Error| LuaError::Load(first_line(&e));
        let lua = Lua::new();
        let dir = setup.path.parent().unwrap_or(Path::new("."));
        crate::riff::prepare(&lua, dir).map_err(load_err)?;
        api::install(&lua, setup.emitter.clone(), setup.shared).map_err(load_err)?;
        let budget = Budget::install(&lua, setup.budget).map_err(load_err)?;
        budget.start();
        let returned = lua
            .load(setup.source)
            .set_name(format!("@{}", setup.path.display()))
            .eval::<Value>();
        budget.stop();
        let module = match returned.map_err(load_err)? {
            Value::Table(t) => t,
            other => {
                return Err(LuaError::Invalid {
                    path: setup.path.to_path_buf(),
                    message: format!(
                        "a plugin must return a table (tapline hooks or a riff module), not {}",
                        other.type_name()
                    ),
                })
            }
        };
        let hooks = Hooks::from_table(&module).map_err(load_err)?;
        let riff = Chain::detect(&lua, &module).map_err(load_err)?;
        let defined = Defined::of(&hooks, riff.is_some());
        let request_slot = Slot::request(&lua).map_err(load_err)?;
        let response_slot = Slot::response(&lua).map_err(load_err)?;
        Ok(PluginState {
            request_slot,
            response_slot,
            lua,
            hooks,
            riff,
            defined,
            module,
            emitter: setup.emitter,
            budget,
            flows: HashMap::new(),
        })
    }

    /// Calls a hook within the time budget, with `flow` as the flow of any record it emits.
    pub(crate) fn call<R: FromLuaMulti>(
        &self,
        hook: &Function,
        flow: Option<&Arc<Flow>>,
        args: impl IntoLuaMulti,
    ) -> Result<R, HookFailure> {
        self.guarded(flow, || hook.call::<R>(args))
    }

    /// Runs `f` (which calls into Lua) within the time budget.
    pub(crate) fn guarded<R>(
        &self,
        flow: Option<&Arc<Flow>>,
        f: impl FnOnce() -> mlua::Result<R>,
    ) -> Result<R, HookFailure> {
        *self.emitter.flow.lock() = flow.cloned();
        self.budget.start();
        let result = f();
        let timed_out = self.budget.stop();
        result.map_err(|e| HookFailure {
            message: first_line(&e),
            timed_out,
        })
    }

    /// The cached table of `flow`, made on first use.
    pub(crate) fn flow_table(&mut self, flow: &Flow) -> mlua::Result<Table> {
        if let Some(t) = self.flows.get(&flow.id.0) {
            return Ok(t.clone());
        }
        if self.flows.len() >= MAX_FLOWS {
            tracing::warn!(
                "lua {}: more than {MAX_FLOWS} open flows in one state; dropping their flow.state",
                self.emitter.plugin.lock()
            );
            self.flows.clear();
        }
        let t = crate::objects::flow_table(&self.lua, flow)?;
        self.flows.insert(flow.id.0, t.clone());
        Ok(t)
    }

    /// Forgets a flow's table (and so its `flow.state`), returning it.
    pub(crate) fn drop_flow(&mut self, flow: &Flow) -> Option<Table> {
        self.flows.remove(&flow.id.0)
    }

    /// Whether this state holds `flow`'s table.
    pub(crate) fn has_flow(&self, flow: &Flow) -> bool {
        self.flows.contains_key(&flow.id.0)
    }

    /// Whether this state holds the table of a flow in progress.
    pub(crate) fn has_flows(&self) -> bool {
        !self.flows.is_empty()
    }

    /// Calls `on_stop`, if the plugin defines it.
    pub(crate) fn stop(&self) -> Result<(), HookFailure> {
        match self.hooks.on_stop.clone() {
            Some(hook) => self.call::<()>(&hook, None, ()),
            None => Ok(()),
        }
    }
}
