//! [`Host`]: loads plugin files for one run, sharing `tap.shared` and the `--plugin-arg`s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mlua::Value;
use parking_lot::Mutex;
use tapline_core::{EventSink, Mode, NullSink};

use crate::api::Emitter;
use crate::error::LuaError;
use crate::plugin::LuaPlugin;
use crate::shared::SharedDict;
use crate::state::{PluginState, StateSetup, HOOK_NAMES};

/// One `--plugin-arg NAME.key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginArg {
    /// `NAME.key`: the plugin's `name` field or file stem, a dot, the key.
    pub target: String,
    /// The value.
    pub value: String,
}

impl PluginArg {
    /// Parses `NAME.key=value`.
    pub fn parse(text: &str) -> Result<PluginArg, LuaError> {
        let bad = || LuaError::BadArg(text.to_string());
        let (target, value) = text.split_once('=').ok_or_else(bad)?;
        match target.split_once('.') {
            Some((name, key)) if !name.is_empty() && !key.is_empty() => Ok(PluginArg {
                target: target.to_string(),
                value: value.to_string(),
            }),
            _ => Err(bad()),
        }
    }

    /// Parses every `--plugin-arg` of a run.
    pub fn parse_all(texts: &[String]) -> Result<Vec<PluginArg>, LuaError> {
        texts.iter().map(|t| PluginArg::parse(t)).collect()
    }

    /// The key, when this argument is for a plugin called `name`.
    fn key_for(&self, name: &str) -> Option<&str> {
        self.target
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|k| !k.is_empty())
    }
}

/// How a host runs its plugins.
#[derive(Clone)]
pub struct HostConfig {
    /// Proxy or capture.
    pub mode: Mode,
    /// Where `tap.emit` records and `tap.alert` alerts go.
    pub sink: Arc<dyn EventSink>,
    /// The `--plugin-arg`s of the run.
    pub args: Vec<PluginArg>,
    /// How long one hook call may run before it is interrupted.
    pub hook_budget: Duration,
    /// Lua states per plugin (one per worker thread).
    pub states: usize,
}

impl HostConfig {
    /// A configuration with the defaults: no arguments, a 250 ms budget, one state per core,
    /// records dropped.
    pub fn new(mode: Mode) -> HostConfig {
        HostConfig {
            mode,
            sink: Arc::new(NullSink),
            args: Vec::new(),
            hook_budget: Duration::from_millis(250),
            states: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Loads Lua plugins for one run; every plugin it loads shares one `tap.shared`.
pub struct Host {
    loader: Arc<Loader>,
    /// For each `--plugin-arg`, whether a loaded plugin took it.
    used_args: Mutex<Vec<bool>>,
}

/// What loading a version of a plugin takes; each plugin keeps it for its reloads, so
/// `tap.shared` and the `--plugin-arg`s outlive the [`Host`].
pub(crate) struct Loader {
    config: HostConfig,
    shared: SharedDict,
}

/// One version of a plugin, loaded and started in every state.
pub(crate) struct Loaded {
    pub(crate) info: PluginInfo,
    pub(crate) states: Vec<PluginState>,
    /// The plugin file as it was read.
    pub(crate) source: Vec<u8>,
    /// For each `--plugin-arg`, whether this plugin took it.
    used: Vec<bool>,
}

/// What kind of plugin a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginKind {
    /// A tapline plugin: a table of `on_*` hooks.
    Tapline,
    /// A riff-style module (`init`/`push`/`match`/`action`), or a chain of them.
    Riff {
        /// How many modules the chain holds.
        modules: usize,
    },
}

/// A loaded plugin's identity, as `plugins check` prints it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Its `name` field, or the file stem.
    pub name: String,
    /// Its `version` field, or empty.
    pub version: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The hooks it defines, in the documented order.
    pub hooks: Vec<&'static str>,
    /// tapline or riff style.
    pub kind: PluginKind,
    /// Its `messages` field: the message types `on_message` is called for (`None`: all).
    pub messages: Option<Vec<String>>,
}

impl fmt::Display for PluginInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = if self.version.is_empty() {
            "-"
        } else {
            &self.version
        };
        write!(f, "{} {version} ({}): ", self.name, self.path.display())?;
        match self.kind {
            PluginKind::Riff { modules } => write!(
                f,
                "riff-style, {modules} module{} (init/push/match/action)",
                if modules == 1 { "" } else { "s" }
            ),
            PluginKind::Tapline if self.hooks.is_empty() => f.write_str("no hooks"),
            PluginKind::Tapline => write!(f, "hooks {}", self.hooks.join(", ")),
        }
    }
}

impl Host {
    /// A host for one run.
    pub fn new(config: HostConfig) -> Host {
        Host {
            used_args: Mutex::new(vec![false; config.args.len()]),
            loader: Arc::new(Loader {
                config,
                shared: SharedDict::new(),
            }),
        }
    }

    /// The `--plugin-arg`s no loaded plugin took (a misspelt plugin name, say).
    pub fn unused_args(&self) -> Vec<&PluginArg> {
        let used = self.used_args.lock();
        self.loader
            .config
            .args
            .iter()
            .zip(used.iter())
            .filter(|(_, used)| !**used)
            .map(|(arg, _)| arg)
            .collect()
    }

    /// The `tap.shared` dictionary of this run.
    pub fn shared(&self) -> &SharedDict {
        &self.loader.shared
    }

    /// Loads a plugin file into one Lua state per worker and calls each state's `on_start`
    /// with the plugin's `--plugin-arg` values. Errors name the file and line.
    pub fn load(&self, path: &Path) -> Result<Arc<LuaPlugin>, LuaError> {
        let loaded = self.loader.load(path, Loader::read(path)?)?;
        for (taken, now) in self.used_args.lock().iter_mut().zip(&loaded.used) {
            *taken |= *now;
        }
        Ok(Arc::new(LuaPlugin::new(loaded, self.loader.clone())))
    }
}

impl Loader {
    /// Proxy or capture.
    pub(crate) fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Reads a plugin file.
    pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LuaError> {
        std::fs::read(path).map_err(|source| LuaError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Runs `source` (the file at `path`) in one Lua state per worker and calls each
    /// state's `on_start`. If one fails, the states already started get `on_stop`.
    pub(crate) fn load(&self, path: &Path, source: Vec<u8>) -> Result<Loaded, LuaError> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let count = self.config.states.max(1);
        let mut states = Vec::with_capacity(count);
        let mut identity: Option<(String, String)> = None;
        for _ in 0..count {
            let emitter = Arc::new(Emitter {
                plugin: Mutex::new(stem.as_str().into()),
                sink: self.config.sink.clone(),
                mode: self.config.mode,
                flow: Mutex::new(None),
            });
            let state = PluginState::load(StateSetup {
                path,
                source: &source,
                emitter,
                shared: self.shared.clone(),
                budget: self.config.hook_budget,
            })?;
            let (name, _) = identity.get_or_insert_with(|| identify(&state, &stem));
            *state.emitter.plugin.lock() = name.as_str().into();
            states.push(state);
        }
        let (name, version) = identity.unwrap_or_default();
        let first = &states[0];
        warn_unknown_hooks(first, &name);
        let kind = match &first.riff {
            Some(chain) => PluginKind::Riff {
                modules: chain.len(),
            },
            None => PluginKind::Tapline,
        };
        let info = PluginInfo {
            hooks: first.hooks.defined(),
            messages: message_types(first)
                .map_err(|why| LuaError::Load(format!("{}: {why}", path.display())))?,
            name,
            version,
            path: path.to_path_buf(),
            kind,
        };
        if info.kind == PluginKind::Tapline && info.hooks.is_empty() {
            tracing::warn!("{}: the plugin defines no hooks", path.display());
        }
        let mut used = vec![false; self.config.args.len()];
        for (i, arg) in self.config.args.iter().enumerate() {
            used[i] = arg
                .key_for(&info.name)
                .or_else(|| arg.key_for(&stem))
                .is_some();
        }
        for (i, state) in states.iter().enumerate() {
            if let Err(e) = self.start(state, &info, &stem) {
                for started in &states[..i] {
                    let _ = started.stop();
                }
                return Err(e);
            }
        }
        Ok(Loaded {
            info,
            states,
            source,
            used,
        })
    }

    /// Calls `on_start(args)` in one state; a failure is a load error.
    fn start(&self, state: &PluginState, info: &PluginInfo, stem: &str) -> Result<(), LuaError> {
        let Some(hook) = state.hooks.on_start.clone() else {
            return Ok(());
        };
        let load_err = |e: mlua::Error| LuaError::Load(crate::error::first_line(&e));
        let args = state.lua.create_table().map_err(load_err)?;
        for arg in &self.config.args {
            if let Some(key) = arg.key_for(&info.name).or_else(|| arg.key_for(stem)) {
                args.set(key, arg.value.as_str()).map_err(load_err)?;
            }
        }
        state.call::<()>(&hook, None, args).map_err(|f| {
            LuaError::Load(format!("{}: on_start: {}", info.path.display(), f.message))
        })
    }
}

/// The plugin's `name` and `version` fields (the file stem and "" when absent).
fn identify(state: &PluginState, stem: &str) -> (String, String) {
    let field = |key: &str| match state.module.get::<Value>(key) {
        Ok(Value::String(s)) => Some(s.to_string_lossy()),
        Ok(Value::Number(n)) => Some(n.to_string()),
        Ok(Value::Integer(n)) => Some(n.to_string()),
        _ => None,
    };
    (
        field("name").unwrap_or_else(|| stem.to_string()),
        field("version").unwrap_or_default(),
    )
}

/// The plugin's `messages` field: a list of message type names (`{"Query", "Bind"}`), so
/// that `on_message` is called, and messages are built, only for those.
fn message_types(state: &PluginState) -> Result<Option<Vec<String>>, String> {
    let bad = || "messages must be a list of message type names, e.g. { \"Query\", \"Bind\" }";
    match state.module.get::<Value>("messages") {
        Ok(Value::Nil) => Ok(None),
        Ok(Value::Table(t)) => t
            .sequence_values::<Value>()
            .map(|v| match v {
                Ok(Value::String(s)) => Ok(s.to_string_lossy()),
                _ => Err(bad().to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(bad().to_string()),
    }
}

/// Warns about `on_*` fields that are no hook tapline knows (likely typos).
fn warn_unknown_hooks(state: &PluginState, name: &str) {
    for pair in state.module.pairs::<Value, Value>() {
        if let Ok((Value::String(key), Value::Function(_))) = pair {
            let key = key.to_string_lossy();
            if key.starts_with("on_") && !HOOK_NAMES.contains(&key.as_str()) {
                tracing::warn!("lua plugin {name}: {key} is not a hook tapline calls");
            }
        }
    }
}
