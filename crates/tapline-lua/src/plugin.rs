//! [`LuaPlugin`]: one plugin file as a pipeline [`Stage`], with one Lua state per worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{AnyUserData, Function, Value};
use parking_lot::{Mutex, MutexGuard};
use tapline_core::{
    BoxFuture, Chunk, ChunkVerdict, Event, EventKind, Flow, HttpRequest, HttpResponse, Interest,
    Mode, RequestVerdict, ResponseVerdict, Stage, StageCounters,
};

use crate::api::Verdict;
use crate::host::PluginInfo;
use crate::objects;
use crate::state::{HookFailure, PluginState};

/// Which hooks a plugin defines (the same in every state), to answer `interest` cheaply.
#[derive(Debug, Clone, Copy, Default)]
struct Defined {
    flow_start: bool,
    flow_end: bool,
    packet: bool,
    data: bool,
    request: bool,
    response: bool,
    message: bool,
    transaction: bool,
    stop: bool,
    riff: bool,
}

impl Defined {
    /// Whether the plugin has anything to do for an observe-only event: a hook for it, or
    /// (at a flow's end) a flow table to drop.
    fn handles(&self, kind: &EventKind) -> bool {
        match kind {
            EventKind::FlowStart => self.flow_start,
            EventKind::FlowEnd { .. } => true,
            EventKind::Packet(_) => self.packet || self.riff,
            EventKind::Message(_) => self.message,
            EventKind::Transaction(_) => self.transaction,
            _ => false,
        }
    }
}

/// A Lua plugin as a pipeline stage.
pub struct LuaPlugin {
    info: PluginInfo,
    mode: Mode,
    defined: Defined,
    states: Vec<Mutex<PluginState>>,
    counters: StageCounters,
    errors: ErrorLog,
}

impl LuaPlugin {
    pub(crate) fn new(info: PluginInfo, mode: Mode, states: Vec<PluginState>) -> LuaPlugin {
        let h = &states[0].hooks;
        let defined = Defined {
            flow_start: h.on_flow_start.is_some(),
            flow_end: h.on_flow_end.is_some(),
            packet: h.on_packet.is_some(),
            data: h.on_data.is_some(),
            request: h.on_request.is_some(),
            response: h.on_response.is_some(),
            message: h.on_message.is_some(),
            transaction: h.on_transaction.is_some(),
            stop: h.on_stop.is_some(),
            riff: states[0].riff.is_some(),
        };
        LuaPlugin {
            info,
            mode,
            defined,
            states: states.into_iter().map(Mutex::new).collect(),
            counters: StageCounters::default(),
            errors: ErrorLog::default(),
        }
    }

    /// The plugin's name, version, hooks and style.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// How many Lua states run this plugin.
    pub fn state_count(&self) -> usize {
        self.states.len()
    }

    /// The state that handles `flow` (every event of a flow goes to the same one).
    fn state(&self, flow: Option<&Flow>) -> MutexGuard<'_, PluginState> {
        let i = flow.map_or(0, |f| (f.id.0 % self.states.len() as u64) as usize);
        self.states[i].lock()
    }

    /// Counts and logs (rate-limited) a failed hook call; the event goes on unchanged.
    fn failed(&self, hook: &str, failure: HookFailure) {
        StageCounters::bump(&self.counters.errors);
        if failure.timed_out {
            StageCounters::bump(&self.counters.timeouts);
        }
        self.errors.log(&self.info.name, hook, &failure.message);
    }

    fn busy(&self, since: Instant) {
        self.counters.record_call(since.elapsed());
    }

    fn observe(&self, event: &Event) {
        let flow = event.flow.as_ref();
        let mut state = self.state(flow.map(|f| f.as_ref()));
        let result = match (&event.kind, flow) {
            (EventKind::FlowStart, Some(flow)) => match state.hooks.on_flow_start.clone() {
                Some(hook) => call_with_flow(&mut state, "on_flow_start", flow, |s, ft| {
                    s.call::<()>(&hook, Some(flow), ft)
                }),
                None => Ok(()),
            },
            (
                EventKind::FlowEnd {
                    stats,
                    end,
                    duration,
                },
                Some(flow),
            ) => {
                let result = match state.hooks.on_flow_end.clone() {
                    Some(hook) => call_with_flow(&mut state, "on_flow_end", flow, |s, ft| {
                        objects::finish_flow(&ft, stats, end, *duration)
                            .map_err(|e| lua_failure(&e))?;
                        s.call::<()>(&hook, Some(flow), ft)
                    }),
                    None => Ok(()),
                };
                state.drop_flow(flow);
                result
            }
            (EventKind::Packet(pkt), _) => {
                let mut result = Ok(());
                if let Some(hook) = state.hooks.on_packet.clone() {
                    let ts = event.ts.as_secs_f64();
                    result = (|| {
                        let p = objects::packet_table(&state.lua, ts, pkt)
                            .map_err(|e| ("on_packet", lua_failure(&e)))?;
                        let ft = match flow {
                            Some(f) => Value::Table(
                                state
                                    .flow_table(f)
                                    .map_err(|e| ("on_packet", lua_failure(&e)))?,
                            ),
                            None => Value::Nil,
                        };
                        state
                            .call::<()>(&hook, flow, (p, ft))
                            .map_err(|f| ("on_packet", f))
                    })();
                }
                if self.defined.riff && self.mode == Mode::Capture && !pkt.payload.is_empty() {
                    if let Err(f) = run_riff(&state, flow, &pkt.payload) {
                        self.failed("riff", f);
                    }
                }
                result
            }
            (EventKind::Message(msg), Some(flow)) => match state.hooks.on_message.clone() {
                Some(hook) => call_with_flow(&mut state, "on_message", flow, |s, ft| {
                    let m = objects::message_table(&s.lua, event.ts.as_secs_f64(), msg)
                        .map_err(|e| lua_failure(&e))?;
                    s.call::<()>(&hook, Some(flow), (m, ft))
                }),
                None => Ok(()),
            },
            (EventKind::Transaction(tx), Some(flow)) => match state.hooks.on_transaction.clone() {
                Some(hook) => call_with_flow(&mut state, "on_transaction", flow, |s, ft| {
                    let t = objects::transaction_table(&s.lua, event.ts.as_secs_f64(), tx)
                        .map_err(|e| lua_failure(&e))?;
                    s.call::<()>(&hook, Some(flow), (t, ft))
                }),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        drop(state);
        if let Err((hook, failure)) = result {
            self.failed(hook, failure);
        }
    }

    fn chunk(&self, flow: &Arc<Flow>, chunk: &Chunk) -> ChunkVerdict {
        let mut state = self.state(Some(flow));
        if self.defined.riff && flow.mode == Mode::Proxy && !chunk.data.is_empty() {
            if let Err(f) = run_riff(&state, Some(flow), &chunk.data) {
                self.failed("riff", f);
            }
        }
        let Some(hook) = state.hooks.on_data.clone() else {
            return ChunkVerdict::Pass;
        };
        let result = call_with_flow(&mut state, "on_data", flow, |s, ft| {
            let c = objects::chunk_table(&s.lua, chunk).map_err(|e| lua_failure(&e))?;
            let answer = s.call::<Value>(&hook, Some(flow), (c, ft))?;
            chunk_verdict(&hook, answer)
        });
        drop(state);
        result.unwrap_or_else(|(hook, failure)| {
            self.failed(hook, failure);
            ChunkVerdict::Pass
        })
    }

    fn request(&self, flow: &Arc<Flow>, request: &mut HttpRequest) -> RequestVerdict {
        let mut state = self.state(Some(flow));
        let Some(hook) = state.hooks.on_request.clone() else {
            return RequestVerdict::Continue;
        };
        let result = call_with_flow(&mut state, "on_request", flow, |s, ft| {
            let obj = s.request_slot.lend(request);
            let answer = s.call::<Value>(&hook, Some(flow), (obj, ft))?;
            match verdict_of(&hook, &answer)? {
                None => Ok(RequestVerdict::Continue),
                Some(Verdict::Respond(r)) => Ok(RequestVerdict::Respond(r)),
                Some(Verdict::Close(reason)) => Ok(RequestVerdict::Close(reason)),
                Some(Verdict::Hold) => {
                    Err(misuse(&hook, "on_request cannot hold; use tap.respond"))
                }
            }
        });
        state.request_slot.give_back(request, result.is_ok());
        drop(state);
        result.unwrap_or_else(|(hook, failure)| {
            self.failed(hook, failure);
            RequestVerdict::Continue
        })
    }

    fn response(&self, flow: &Arc<Flow>, response: &mut HttpResponse) -> ResponseVerdict {
        let mut state = self.state(Some(flow));
        let Some(hook) = state.hooks.on_response.clone() else {
            return ResponseVerdict::Continue;
        };
        let result = call_with_flow(&mut state, "on_response", flow, |s, ft| {
            let obj = s.response_slot.lend(response);
            let answer = s.call::<Value>(&hook, Some(flow), (obj, ft))?;
            match verdict_of(&hook, &answer)? {
                None => Ok(ResponseVerdict::Continue),
                Some(Verdict::Respond(r)) => Ok(ResponseVerdict::Replace(r)),
                Some(Verdict::Close(reason)) => Ok(ResponseVerdict::Close(reason)),
                Some(Verdict::Hold) => {
                    Err(misuse(&hook, "on_response cannot hold; use tap.respond"))
                }
            }
        });
        state.response_slot.give_back(response, result.is_ok());
        drop(state);
        result.unwrap_or_else(|(hook, failure)| {
            self.failed(hook, failure);
            ResponseVerdict::Continue
        })
    }

    fn stop(&self) {
        if !self.defined.stop {
            return;
        }
        for state in &self.states {
            let state = state.lock();
            if let Some(hook) = state.hooks.on_stop.clone() {
                if let Err(f) = state.call::<()>(&hook, None, ()) {
                    drop(state);
                    self.failed("on_stop", f);
                }
            }
        }
    }
}

/// Gets `flow`'s table and runs `f` with it; failures are tagged with the hook's name.
fn call_with_flow<R>(
    state: &mut PluginState,
    hook: &'static str,
    flow: &Flow,
    f: impl FnOnce(&PluginState, mlua::Table) -> Result<R, HookFailure>,
) -> Result<R, (&'static str, HookFailure)> {
    let ft = state
        .flow_table(flow)
        .map_err(|e| (hook, lua_failure(&e)))?;
    f(state, ft).map_err(|e| (hook, e))
}

fn run_riff(
    state: &PluginState,
    flow: Option<&Arc<Flow>>,
    payload: &Bytes,
) -> Result<(), HookFailure> {
    match &state.riff {
        Some(chain) => state.guarded(flow, || chain.run(&state.lua, payload)),
        None => Ok(()),
    }
}

fn lua_failure(e: &mlua::Error) -> HookFailure {
    HookFailure {
        message: crate::error::first_line(e),
        timed_out: false,
    }
}

/// A hook that answered with something its caller cannot use, located at the hook's
/// definition (`file:line`).
fn misuse(hook: &Function, message: &str) -> HookFailure {
    let info = hook.info();
    HookFailure {
        message: format!(
            "{}:{}: {message}",
            info.short_src.as_deref().unwrap_or("?"),
            info.line_defined.unwrap_or(0)
        ),
        timed_out: false,
    }
}

/// The `tap.*` verdict a hook returned, if any; `nil` is none, other values are mistakes.
fn verdict_of(hook: &Function, answer: &Value) -> Result<Option<Verdict>, HookFailure> {
    match answer {
        Value::Nil => Ok(None),
        Value::UserData(ud) => verdict_from_userdata(hook, ud).map(Some),
        other => Err(misuse(
            hook,
            &format!(
                "returned a {}; return nil or a tap.respond/tap.close verdict",
                other.type_name()
            ),
        )),
    }
}

fn verdict_from_userdata(hook: &Function, ud: &AnyUserData) -> Result<Verdict, HookFailure> {
    ud.borrow::<Verdict>()
        .map(|v| v.clone())
        .map_err(|_| misuse(hook, "returned a userdata that is not a tap verdict"))
}

fn chunk_verdict(hook: &Function, answer: Value) -> Result<ChunkVerdict, HookFailure> {
    match answer {
        Value::Nil => Ok(ChunkVerdict::Pass),
        Value::String(s) => Ok(ChunkVerdict::Replace(Bytes::copy_from_slice(&s.as_bytes()))),
        Value::UserData(ud) => match verdict_from_userdata(hook, &ud)? {
            Verdict::Hold => Ok(ChunkVerdict::Hold),
            Verdict::Close(reason) => Ok(ChunkVerdict::Close(reason)),
            Verdict::Respond(_) => Err(misuse(
                hook,
                "on_data cannot tap.respond; return bytes instead",
            )),
        },
        other => Err(misuse(
            hook,
            &format!(
                "on_data returned a {}; return nil, a string, tap.hold() or tap.close()",
                other.type_name()
            ),
        )),
    }
}

impl Stage for LuaPlugin {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn interest(&self, flow: &Flow) -> Interest {
        let d = &self.defined;
        let uses_flows = d.data || d.request || d.response || d.packet;
        Interest {
            chunks: d.data || (d.riff && flow.mode == Mode::Proxy),
            requests: d.request,
            responses: d.response,
            observe: d.flow_start || d.flow_end || d.message || d.transaction || uses_flows,
            packets: flow.mode == Mode::Capture && (d.packet || d.riff),
        }
    }

    fn wants_packets(&self) -> bool {
        self.defined.packet
    }

    fn counters(&self) -> &StageCounters {
        &self.counters
    }

    fn on_event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        if self.defined.handles(&event.kind) {
            let start = Instant::now();
            self.observe(event);
            self.busy(start);
        }
        Box::pin(std::future::ready(()))
    }

    fn on_chunk<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        chunk: &'a Chunk,
    ) -> BoxFuture<'a, ChunkVerdict> {
        if !self.interest(flow).chunks {
            return Box::pin(std::future::ready(ChunkVerdict::Pass));
        }
        let start = Instant::now();
        let verdict = self.chunk(flow, chunk);
        self.busy(start);
        Box::pin(std::future::ready(verdict))
    }

    fn on_request<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, RequestVerdict> {
        if !self.defined.request {
            return Box::pin(std::future::ready(RequestVerdict::Continue));
        }
        let start = Instant::now();
        let verdict = self.request(flow, request);
        self.busy(start);
        Box::pin(std::future::ready(verdict))
    }

    fn on_response<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        response: &'a mut HttpResponse,
    ) -> BoxFuture<'a, ResponseVerdict> {
        if !self.defined.response {
            return Box::pin(std::future::ready(ResponseVerdict::Continue));
        }
        let start = Instant::now();
        let verdict = self.response(flow, response);
        self.busy(start);
        Box::pin(std::future::ready(verdict))
    }

    fn on_stop(&self) -> BoxFuture<'_, ()> {
        self.stop();
        Box::pin(std::future::ready(()))
    }
}

/// Rate-limited warnings for failing hooks: the first few, then one per interval with the
/// number left unsaid.
#[derive(Default)]
struct ErrorLog(Mutex<ErrorLogState>);

#[derive(Default)]
struct ErrorLogState {
    logged: u64,
    last: Option<Instant>,
    suppressed: u64,
}

/// Warnings logged before rate limiting starts.
const FREE_WARNINGS: u64 = 5;
/// At most one warning per this interval afterwards.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

impl ErrorLog {
    fn log(&self, plugin: &str, hook: &str, message: &str) {
        let mut s = self.0.lock();
        let now = Instant::now();
        let due = s.logged < FREE_WARNINGS
            || s.last
                .is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL);
        if !due {
            s.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut s.suppressed);
        s.logged += 1;
        s.last = Some(now);
        drop(s);
        if suppressed > 0 {
            tracing::warn!(
                "lua plugin {plugin}: {hook}: {message} ({suppressed} similar errors not shown)"
            );
        } else {
            tracing::warn!("lua plugin {plugin}: {hook}: {message}");
        }
    }
}
