//! Loading a running plugin's file again: [`LuaPlugin::reload`], and the [`PluginStatus`]
//! each plugin keeps for a status view.
//!
//! The new version is loaded and started (`on_start` in every new state) beside the old
//! one, without any lock the hooks take; only then is each worker's state swapped, under
//! that worker's lock (see [`crate::slot`]), the old state's `on_stop` running there. A
//! version that fails to load or start is dropped and the old one goes on.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::host::{Loaded, Loader};
use crate::plugin::{LuaPlugin, Version};

/// Where a plugin stands after its loads and reloads, for a status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    /// The plugin's name (its `name` field or file stem at the first load), as stats print it.
    pub name: String,
    /// The file given to `--plugin`.
    pub file: PathBuf,
    /// 1 for the first load, one more for each successful reload.
    pub version: u64,
    /// When the version in use was loaded.
    pub loaded_at: SystemTime,
    /// Why the last reload failed, when it did (cleared by a successful one).
    pub last_error: Option<String>,
    /// Successful reloads.
    pub reloads: u64,
    /// Failed reloads.
    pub failures: u64,
}

/// What [`LuaPlugin::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new version is in use.
    Reloaded {
        /// Its number ([`PluginStatus::version`]).
        version: u64,
    },
    /// Nothing changed since the last load or attempt (only when asked to skip that case).
    Unchanged,
    /// The new version failed to load or start; the old one goes on.
    Failed(String),
}

/// A plugin's reload bookkeeping.
pub(crate) struct Reloads {
    loader: Arc<Loader>,
    path: PathBuf,
    /// Held for a whole reload, so reloads of one plugin never overlap.
    inner: Mutex<Inner>,
}

struct Inner {
    status: PluginStatus,
    /// The fingerprint of the Lua files the last load or attempt saw.
    seen: u64,
}

impl Reloads {
    pub(crate) fn new(loaded: &Loaded, loader: Arc<Loader>) -> Reloads {
        let path = loaded.info.path.clone();
        Reloads {
            inner: Mutex::new(Inner {
                status: PluginStatus {
                    name: loaded.info.name.clone(),
                    file: path.clone(),
                    version: 1,
                    loaded_at: SystemTime::now(),
                    last_error: None,
                    reloads: 0,
                    failures: 0,
                },
                seen: fingerprint(&path, &loaded.source),
            }),
            loader,
            path,
        }
    }
}

/// When a reload is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Never: a reload was asked for (SIGHUP).
    Never,
    /// When the plugin file and the Lua files beside it are as the last attempt saw them
    /// (an editor touched a file without changing it, or wrote what failed already).
    Unchanged,
}

impl LuaPlugin {
    /// The file this plugin was loaded from.
    pub fn file(&self) -> &Path {
        &self.reloads.path
    }

    /// The plugin's version, when it was loaded, and how its reloads went.
    pub fn status(&self) -> PluginStatus {
        self.reloads.inner.lock().status.clone()
    }

    /// Loads the plugin's file again and, if it loads and starts, puts it in use: new flows
    /// run it at once, flows in progress at their next event (keeping `flow.state`); every
    /// old state's `on_stop` runs. If it fails, the old version goes on and one warning names
    /// the file and line.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_unless(Skip::Never)
    }

    pub(crate) fn reload_unless(&self, skip: Skip) -> ReloadOutcome {
        let reloads = &self.reloads;
        let mut inner = reloads.inner.lock();
        let loaded = Loader::read(&reloads.path).and_then(|source| {
            let seen = fingerprint(&reloads.path, &source);
            if skip == Skip::Unchanged && seen == inner.seen {
                return Ok(None);
            }
            inner.seen = seen;
            reloads.loader.load(&reloads.path, source).map(Some)
        });
        let status = &mut inner.status;
        match loaded {
            Ok(None) => ReloadOutcome::Unchanged,
            Ok(Some(loaded)) => {
                status.version += 1;
                status.reloads += 1;
                status.loaded_at = SystemTime::now();
                status.last_error = None;
                self.swap(loaded, status.version);
                tracing::info!(
                    "plugin {} reloaded: version {}",
                    reloads.path.display(),
                    status.version
                );
                ReloadOutcome::Reloaded {
                    version: status.version,
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!("plugin {} reload failed: {why}", reloads.path.display());
                status.failures += 1;
                status.last_error = Some(why.clone());
                ReloadOutcome::Failed(why)
            }
        }
    }

    /// Puts a loaded version in use, worker by worker; the replaced states' `on_stop` run.
    fn swap(&self, loaded: Loaded, number: u64) {
        let defined = loaded.states[0].defined;
        let mut stop_failure = None;
        for (slot, state) in self.slots.iter().zip(loaded.states) {
            if let Err(failure) = slot.lock().replace(state) {
                stop_failure.get_or_insert(failure);
            }
        }
        if let Some(failure) = stop_failure {
            tracing::warn!(
                "plugin {}: on_stop of version {} failed: {}",
                self.reloads.path.display(),
                number - 1,
                failure.message
            );
        }
        self.version.store(Arc::new(Version {
            info: loaded.info,
            defined,
        }));
    }

    /// Reload counts for the end-of-run stats.
    pub(crate) fn reload_counts(&self) -> (u64, u64) {
        let inner = self.reloads.inner.lock();
        (inner.status.reloads, inner.status.failures)
    }
}

/// A fingerprint of the plugin's source and of the `.lua` files beside it (the modules it
/// may `require`), to tell a real change from a touch.
fn fingerprint(path: &Path, source: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::watch::is_lua(p) && p.file_name() != path.file_name())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}
