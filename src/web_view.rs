//! The `--web` view as the commands start it: its address and token checked, its history
//! (a sink of the run, or fed JSON objects by `tapline collect`), and its server, whose
//! header shows the run's stages (with the Lua plugins' loaded versions).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use tapline_core::{Pipeline, StageCounters};
use tapline_lua::LuaPlugin;
use tapline_output::metrics;
use tapline_web::{History, Shared, WebServer};

use crate::cli::WebArgs;
use crate::exit::usage;

/// A checked `--web` view, before and while it is served.
pub struct WebView {
    history: Arc<History>,
    capacity: usize,
    addr: SocketAddr,
    token: Option<String>,
}

impl WebView {
    /// The view asked for by `--web` (none without it), once its address, token and history
    /// size are checked (usage errors otherwise).
    pub fn from_args(args: &WebArgs) -> anyhow::Result<Option<WebView>> {
        let Some(text) = &args.web else {
            return Ok(None);
        };
        let Ok(addr) = metrics::parse_address(text) else {
            usage!("--web {text}: not an address (HOST:PORT, or PORT for loopback)");
        };
        let token = args.web_token.clone().filter(|t| !t.is_empty());
        if let Err(e) = tapline_web::check_address(addr, token.as_deref()) {
            usage!("{e}");
        }
        if args.web_history == 0 {
            usage!("--web-history must be at least 1");
        }
        Ok(Some(WebView {
            history: History::new(args.web_history),
            capacity: args.web_history,
            addr,
            token,
        }))
    }

    /// The rows the page shows.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Serves the view with the pipeline's stage counters in its header.
    pub fn serve_stages(&self, pipeline: &Pipeline, lua: &[Arc<LuaPlugin>]) -> anyhow::Result<()> {
        let (pipeline, lua, history) = (pipeline.clone(), lua.to_vec(), self.capacity);
        self.serve(Box::new(move || stage_stats(&pipeline, &lua, history)))
    }

    /// Serves the view with `stats` as its header's counters.
    pub fn serve(&self, stats: Box<dyn Fn() -> Value + Send + Sync>) -> anyhow::Result<()> {
        let shared = Shared {
            history: self.history.clone(),
            stats,
            token: self.token.clone(),
        };
        match WebServer::start(self.addr, shared) {
            Ok(server) => {
                eprintln!("tapline: web view on http://{}/", server.local_addr());
                Ok(())
            }
            Err(e) => usage!("--web {}: {e}", self.addr),
        }
    }

    /// The history size, for a header without stages.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The stages' counters as the web view's header shows them; a Lua plugin's also say which
/// version of its file is loaded and why its last reload failed.
fn stage_stats(pipeline: &Pipeline, lua: &[Arc<LuaPlugin>], history: usize) -> Value {
    let statuses: Vec<_> = lua.iter().map(|p| p.status()).collect();
    let stages: Vec<Value> = pipeline
        .stages()
        .iter()
        .map(|stage| {
            let c = stage.counters();
            let mut entry = json!({
                "name": stage.name(),
                "family": stage.family(),
                "calls": StageCounters::get(&c.calls),
                "errors": StageCounters::get(&c.errors),
                "timeouts": StageCounters::get(&c.timeouts),
                "dropped": StageCounters::get(&c.dropped),
            });
            if let Some(status) = statuses.iter().find(|s| s.name == stage.name()) {
                entry["file"] = json!(status.file);
                entry["version"] = json!(status.version);
                entry["reloads"] = json!(status.reloads);
                entry["last_error"] = json!(status.last_error);
            }
            entry
        })
        .collect();
    json!({ "history": history, "stages": stages })
}
