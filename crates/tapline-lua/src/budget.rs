//! The time budget of one hook call, enforced by an instruction-count hook that checks the
//! clock and interrupts a hook that runs past its deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, VmState};

/// How many VM instructions run between two clock checks.
const CHECK_EVERY: u32 = 10_000;

/// The deadline of the call in progress in one Lua state.
#[derive(Debug)]
pub(crate) struct Budget {
    base: Instant,
    limit: Duration,
    /// Nanoseconds after `base` when the current call must end; 0 when no call runs.
    deadline: AtomicU64,
    /// Set when the hook interrupted the current call.
    fired: AtomicBool,
}

impl Budget {
    /// A budget of `limit` per call, installed as `lua`'s instruction hook.
    pub(crate) fn install(lua: &Lua, limit: Duration) -> mlua::Result<Arc<Budget>> {
        let budget = Arc::new(Budget {
            base: Instant::now(),
            limit,
            deadline: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        });
        let watch = budget.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(CHECK_EVERY),
            move |_lua, debug| {
                let deadline = watch.deadline.load(Ordering::Relaxed);
                if deadline == 0 || watch.elapsed_nanos() < deadline {
                    return Ok(VmState::Continue);
                }
                watch.fired.store(true, Ordering::Relaxed);
                let source = debug.source();
                let at = format!(
                    "{}:{}",
                    source.short_src.as_deref().unwrap_or("?"),
                    debug.current_line().unwrap_or(0)
                );
                Err(mlua::Error::runtime(format!(
                    "{at}: interrupted: the hook ran over its time budget of {:?}",
                    watch.limit
                )))
            },
        )?;
        Ok(budget)
    }

    fn elapsed_nanos(&self) -> u64 {
        self.base.elapsed().as_nanos().min(u64::MAX as u128) as u64
    }

    /// Starts the clock for one call.
    pub(crate) fn start(&self) {
        self.fired.store(false, Ordering::Relaxed);
        let deadline =
            self.elapsed_nanos() + self.limit.as_nanos().min(u64::MAX as u128 / 2) as u64;
        self.deadline.store(deadline.max(1), Ordering::Relaxed);
    }

    /// Stops the clock; says whether the call was interrupted for running over.
    pub(crate) fn stop(&self) -> bool {
        self.deadline.store(0, Ordering::Relaxed);
        self.fired.swap(false, Ordering::Relaxed)
    }
}
