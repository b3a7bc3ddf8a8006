//! [`LuaPlugin`]: one plugin file as a pipeline [`Stage`], with one Lua state per worker.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use mlua::{AnyUserData, Function, Value};
use parking_lot::{Mutex, MutexGuard};
use tapline_core::{
    BoxFuture, Chunk, ChunkVerdict, Event, EventKind, Flow, Hook, HookFailure, HookResult,
    HttpRequest, HttpResponse, Interest, Message, MessageVerdict, Mode, RequestVerdict,
    ResponseVerdict, Side, Stage, StageCounters, Timestamp,
};

use crate::api::Verdict;
use crate::host::{Loaded, Loader, PluginInfo};
use crate::objects;
use crate::reload::Reloads;
use crate::slot::Slot;
use crate::state::{Defined, PluginState};

/// A Lua plugin as a pipeline stage. Its file can be loaded again while it runs
/// ([`LuaPlugin::reload`]).
pub struct LuaPlugin {
    /// The plugin's name at its first load: the stage's name for the whole run.
    pub(crate) name: String,
    mode: Mode,
    /// What the version in use defines, read per flow (`interest`) and per message.
    pub(crate) version: ArcSwap<Version>,
    pub(crate) slots: Vec<Mutex<Slot>>,
    counters: StageCounters,
    /// Reloads, their outcome and what the status shows.
    pub(crate) reloads: Reloads,
}

/// What one loaded version of a plugin is, as the stage answers for it.
pub(crate) struct Version {
    pub(crate) info: PluginInfo,
    pub(crate) defined: Defined,
}

impl LuaPlugin {
    pub(crate) fn new(loaded: Loaded, loader: Arc<Loader>) -> LuaPlugin {
        let defined = loaded.states[0].defined;
        let mode = loader.mode();
        LuaPlugin {
            name: loaded.info.name.clone(),
            mode,
            reloads: Reloads::new(&loaded, loader),
            version: ArcSwap::from_pointee(Version {
                info: loaded.info,
                defined,
            }),
            slots: loaded
                .states
                .into_iter()
                .map(|s| Mutex::new(Slot::new(s)))
                .collect(),
            counters: StageCounters::default(),
        }
    }

    /// The name, version, hooks and style of the version in use.
    pub fn info(&self) -> PluginInfo {
        self.version.load().info.clone()
    }

    /// How many Lua states run this plugin.
    pub fn state_count(&self) -> usize {
        self.slots.len()
    }

    /// The slot that handles `flow` (every event of a flow goes to the same one).
    fn state(&self, flow: Option<&Flow>) -> MutexGuard<'_, Slot> {
        let i = flow.map_or(0, |f| (f.id.0 % self.slots.len() as u64) as usize);
        self.slots[i].lock()
    }

    fn observe(&self, event: &Event) -> HookResult<()> {
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
                if state.defined.riff && self.mode == Mode::Capture && !pkt.payload.is_empty() {
                    let riff = run_riff(&state, flow, &pkt.payload);
                    result = result.and(riff.map_err(|f| ("riff", f)));
                }
                result
            }
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
        result.map_err(tagged)
    }

    fn chunk(&self, flow: &Arc<Flow>, chunk: &Chunk) -> Answer<ChunkVerdict> {
        let mut state = self.state(Some(flow));
        if state.defined.riff && flow.mode == Mode::Proxy && !chunk.data.is_empty() {
            if let Err(failure) = run_riff(&state, Some(flow), &chunk.data) {
                let failure = tagged(("riff", failure));
                if !state.defined.data {
                    return Err(failure);
                }
                // Both a riff chain and on_data: the riff failure is this stage's to count,
                // and on_data still gets the chunk.
                let label = format!("lua plugin {}", self.name);
                self.counters
                    .failed(&label, Hook::Data, &failure, "on_data still runs");
            }
        }
        let Some(hook) = state.hooks.on_data.clone() else {
            return Ok((ChunkVerdict::Pass, None));
        };
        let result = call_with_flow(&mut state, "on_data", flow, |s, ft| {
            let c = objects::chunk_table(&s.lua, chunk).map_err(|e| lua_failure(&e))?;
            let answer = s.call::<Value>(&hook, Some(flow), (c, ft))?;
            chunk_verdict(&hook, answer)
        });
        result.map_err(tagged)
    }

    fn request(&self, flow: &Arc<Flow>, request: &mut HttpRequest) -> Answer<RequestVerdict> {
        let mut state = self.state(Some(flow));
        let Some(hook) = state.hooks.on_request.clone() else {
            return Ok((RequestVerdict::Continue, None));
        };
        let result = call_with_flow(&mut state, "on_request", flow, |s, ft| {
            let obj = s.request_slot.lend(request);
            let answer = s.call::<Value>(&hook, Some(flow), (obj, ft))?;
            match verdict_of(&hook, &answer)? {
                None => Ok((RequestVerdict::Continue, None)),
                Some(Verdict::Delay(d)) => Ok((RequestVerdict::Continue, Some(d))),
                Some(Verdict::Respond(r)) => Ok((RequestVerdict::Respond(r), None)),
                Some(Verdict::Close(reason)) => Ok((RequestVerdict::Close(reason), None)),
                Some(Verdict::Hold) => {
                    Err(misuse(&hook, "on_request cannot hold; use tap.respond"))
                }
                Some(Verdict::PgError(_)) => Err(misuse(&hook, PG_ERROR_ELSEWHERE)),
            }
        });
        state.request_slot.give_back(request, result.is_ok());
        result.map_err(tagged)
    }

    fn response(&self, flow: &Arc<Flow>, response: &mut HttpResponse) -> Answer<ResponseVerdict> {
        let mut state = self.state(Some(flow));
        let Some(hook) = state.hooks.on_response.clone() else {
            return Ok((ResponseVerdict::Continue, None));
        };
        let result = call_with_flow(&mut state, "on_response", flow, |s, ft| {
            let obj = s.response_slot.lend(response);
            let answer = s.call::<Value>(&hook, Some(flow), (obj, ft))?;
            match verdict_of(&hook, &answer)? {
                None => Ok((ResponseVerdict::Continue, None)),
                Some(Verdict::Delay(d)) => Ok((ResponseVerdict::Continue, Some(d))),
                Some(Verdict::Respond(r)) => Ok((ResponseVerdict::Replace(r), None)),
                Some(Verdict::Close(reason)) => Ok((ResponseVerdict::Close(reason), None)),
                Some(Verdict::Hold) => {
                    Err(misuse(&hook, "on_response cannot hold; use tap.respond"))
                }
                Some(Verdict::PgError(_)) => Err(misuse(&hook, PG_ERROR_ELSEWHERE)),
            }
        });
        state.response_slot.give_back(response, result.is_ok());
        result.map_err(tagged)
    }

    /// `on_message`: the message as a table; edits to its editable fields (see
    /// [`objects::read_message_edits`]) are kept.
    fn message(
        &self,
        flow: &Arc<Flow>,
        ts: Timestamp,
        msg: &mut Message,
    ) -> Answer<MessageVerdict> {
        let mut state = self.state(Some(flow));
        let Some(hook) = state.hooks.on_message.clone() else {
            return Ok((MessageVerdict::Continue, None));
        };
        let result = call_with_flow(&mut state, "on_message", flow, |s, ft| {
            let m = objects::message_table(&s.lua, ts.as_secs_f64(), msg)
                .map_err(|e| lua_failure(&e))?;
            let answer = s.call::<Value>(&hook, Some(flow), (m.clone(), ft))?;
            let verdict = match verdict_of(&hook, &answer)? {
                None => (MessageVerdict::Continue, None),
                Some(Verdict::Delay(d)) => (MessageVerdict::Continue, Some(d)),
                Some(Verdict::PgError(e)) => (MessageVerdict::PgError(e), None),
                Some(Verdict::Close(reason)) => (MessageVerdict::Close(reason), None),
                Some(Verdict::Hold | Verdict::Respond(_)) => {
                    return Err(misuse(
                        &hook,
                        "on_message answers with tap.pg_error, tap.delay or tap.close",
                    ))
                }
            };
            objects::read_message_edits(&m, msg).map_err(|e| lua_failure(&e))?;
            Ok(verdict)
        });
        result.map_err(tagged)
    }

    /// Holds the event for the delay a hook asked for (`tap.delay`), in the proxy; in
    /// capture the delay is counted as an ignored verdict.
    async fn delayed<V>(&self, flow: &Flow, answer: Answer<V>) -> HookResult<V> {
        let (verdict, delay) = answer?;
        if let Some(d) = delay {
            match flow.mode {
                Mode::Capture | Mode::Replay => self.counters.ignored(&self.name, "delay"),
                _ => tokio::time::sleep(d).await,
            }
        }
        Ok(verdict)
    }

    /// Runs `on_stop` in every state; the first failure is the answer (all states run).
    fn stop(&self) -> HookResult<()> {
        let mut result = Ok(());
        for slot in &self.slots {
            let call = slot.lock().stop();
            if result.is_ok() {
                result = call;
            }
        }
        result
    }
}

/// A failure of a hook other than the one the dispatch called (riff's functions), named in
/// its message.
fn tagged((hook, failure): (&'static str, HookFailure)) -> HookFailure {
    if hook == "riff" {
        HookFailure {
            message: format!("riff: {}", failure.message),
            ..failure
        }
    } else {
        failure
    }
}

/// Gets `flow`'s table and runs `f` with it; failures are tagged with the hook's name.
fn call_with_flow<R>(
    state: &mut Slot,
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
    HookFailure::new(crate::error::first_line(e))
}

/// A hook that answered with something its caller cannot use, located at the hook's
/// definition (`file:line`).
fn misuse(hook: &Function, message: &str) -> HookFailure {
    let info = hook.info();
    HookFailure::new(format!(
        "{}:{}: {message}",
        info.short_src.as_deref().unwrap_or("?"),
        info.line_defined.unwrap_or(0)
    ))
}

/// The `tap.*` verdict a hook returned, if any; `nil` is none, other values are mistakes.
fn verdict_of(hook: &Function, answer: &Value) -> Result<Option<Verdict>, HookFailure> {
    match answer {
        Value::Nil => Ok(None),
        Value::UserData(ud) => verdict_from_userdata(hook, ud).map(Some),
        other => Err(misuse(
            hook,
            &format!(
                "returned a {}; return nil or a tap verdict (tap.respond, tap.close, tap.delay, …)",
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

/// What a hook answered, with the delay it asked for (`tap.delay`).
type Answer<V> = HookResult<(V, Option<Duration>)>;

/// Why `tap.pg_error` is refused outside `on_message`.
const PG_ERROR_ELSEWHERE: &str =
    "tap.pg_error answers PostgreSQL messages: return it from on_message";

fn chunk_verdict(hook: &Function, answer: Value) -> Answer<ChunkVerdict> {
    match answer {
        Value::Nil => Ok((ChunkVerdict::Pass, None)),
        Value::String(s) => Ok((
            ChunkVerdict::Replace(Bytes::copy_from_slice(&s.as_bytes())),
            None,
        )),
        Value::UserData(ud) => match verdict_from_userdata(hook, &ud)? {
            Verdict::Hold => Ok((ChunkVerdict::Hold, None)),
            Verdict::Close(reason) => Ok((ChunkVerdict::Close(reason), None)),
            Verdict::Delay(d) => Ok((ChunkVerdict::Pass, Some(d))),
            Verdict::Respond(_) => Err(misuse(
                hook,
                "on_data cannot tap.respond; return bytes instead",
            )),
            Verdict::PgError(_) => Err(misuse(hook, PG_ERROR_ELSEWHERE)),
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
        &self.name
    }

    fn family(&self) -> &'static str {
        "lua"
    }

    fn interest(&self, flow: &Flow) -> Interest {
        let d = &self.version.load().defined;
        Interest {
            chunks: d.data || (d.riff && flow.mode == Mode::Proxy),
            requests: d.request,
            responses: d.response,
            messages: d.message,
            packets: flow.mode == Mode::Capture && (d.packet || d.riff),
            observe: d.observed(),
        }
    }

    fn wants_message(&self, _from: Side, type_name: &str) -> bool {
        self.version
            .load()
            .info
            .messages
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == type_name))
    }

    fn wants_packets(&self) -> bool {
        self.version.load().defined.packet
    }

    fn counters(&self) -> &StageCounters {
        &self.counters
    }

    fn own_counts(&self) -> Vec<(&'static str, u64)> {
        let (reloads, failures) = self.reload_counts();
        vec![("reloads", reloads), ("failed reloads", failures)]
    }

    fn on_event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, HookResult<()>> {
        Box::pin(std::future::ready(self.observe(event)))
    }

    fn on_chunk<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        chunk: &'a Chunk,
    ) -> BoxFuture<'a, HookResult<ChunkVerdict>> {
        Box::pin(async move { self.delayed(flow, self.chunk(flow, chunk)).await })
    }

    fn on_request<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        request: &'a mut HttpRequest,
    ) -> BoxFuture<'a, HookResult<RequestVerdict>> {
        Box::pin(async move {
            let answer = self.request(flow, request);
            self.delayed(flow, answer).await
        })
    }

    fn on_response<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        response: &'a mut HttpResponse,
    ) -> BoxFuture<'a, HookResult<ResponseVerdict>> {
        Box::pin(async move {
            let answer = self.response(flow, response);
            self.delayed(flow, answer).await
        })
    }

    fn on_message<'a>(
        &'a self,
        flow: &'a Arc<Flow>,
        ts: Timestamp,
        message: &'a mut Message,
    ) -> BoxFuture<'a, HookResult<MessageVerdict>> {
        Box::pin(async move {
            let answer = self.message(flow, ts, message);
            self.delayed(flow, answer).await
        })
    }

    fn on_stop(&self) -> BoxFuture<'_, HookResult<()>> {
        Box::pin(std::future::ready(self.stop()))
    }
}
