//! [`Reloader`]: reloads plugins when their files change (inotify through `notify`, or
//! polling where inotify is unavailable) and when asked ([`ReloadHandle::reload_all`], on
//! SIGHUP).
//!
//! The folder of each plugin file is watched, not the file: editors replace files by renaming
//! a temporary one over them, which a watch on the file itself would lose. A change to any
//! `.lua` file of the folder (the plugin or a module it may `require`) reloads the folder's
//! plugins once the folder has been quiet for [`QUIET`]: an editor's truncate, writes and
//! rename make one reload. A reload that finds the files as the last attempt saw them is
//! skipped, so a touch or a save without changes reloads nothing and a broken file warns once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{Config, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};

use crate::reload::{PluginStatus, Skip};
use crate::LuaPlugin;

/// How long a folder must be quiet after a change before its plugins reload.
const QUIET: Duration = Duration::from_millis(150);
/// The longest a reload waits for quiet once a change was seen (a file rewritten nonstop).
const MAX_WAIT: Duration = Duration::from_secs(1);
/// How often folders are scanned where inotify is unavailable.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Whether `path` names a Lua file.
pub(crate) fn is_lua(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "lua")
}

enum Msg {
    /// A Lua file changed.
    Changed(PathBuf),
    /// Reload every plugin now.
    All,
    Stop,
}

/// Reloads a run's Lua plugins on change and on request, from a thread of its own; dropping
/// it stops that thread (do so before the run's final `on_stop`).
pub struct Reloader {
    handle: ReloadHandle,
    thread: Option<JoinHandle<()>>,
}

/// A cheap handle on a [`Reloader`]: asks for reloads and reads every plugin's status.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Msg>,
    plugins: Arc<[Arc<LuaPlugin>]>,
}

impl ReloadHandle {
    /// Reloads every plugin now, changed or not (SIGHUP).
    pub fn reload_all(&self) {
        let _ = self.tx.send(Msg::All);
    }

    /// Every plugin's status, in pipeline order.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.plugins.iter().map(|p| p.status()).collect()
    }
}

impl Reloader {
    /// Starts reloading `plugins`; with `watch`, their folders are watched for changes.
    pub fn start(plugins: Vec<Arc<LuaPlugin>>, watch: bool) -> Reloader {
        let (tx, rx) = mpsc::channel();
        let plugins: Arc<[Arc<LuaPlugin>]> = plugins.into();
        let folders = folders(&plugins);
        let watcher = if watch {
            let dirs: Vec<&Path> = folders.iter().map(|(d, _)| d.as_path()).collect();
            open_watcher(&dirs, &tx)
        } else {
            None
        };
        let thread = {
            let plugins = plugins.clone();
            std::thread::Builder::new()
                .name("lua-reload".into())
                .spawn(move || {
                    let _watcher = watcher;
                    run(&plugins, &folders, &rx);
                })
                .expect("spawning the plugin reload thread")
        };
        Reloader {
            handle: ReloadHandle { tx, plugins },
            thread: Some(thread),
        }
    }

    /// A handle for reload requests and statuses.
    pub fn handle(&self) -> ReloadHandle {
        self.handle.clone()
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.handle.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Each watched folder (made absolute) with the plugins whose file is in it.
fn folders(plugins: &[Arc<LuaPlugin>]) -> Vec<(PathBuf, Vec<usize>)> {
    let mut out: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    for (i, plugin) in plugins.iter().enumerate() {
        let dir = match plugin.file().parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        match out.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, list)) => list.push(i),
            None => out.push((dir, vec![i])),
        }
    }
    out
}

/// The reload thread: debounces changes per plugin, reloads when due or asked.
fn run(plugins: &[Arc<LuaPlugin>], folders: &[(PathBuf, Vec<usize>)], rx: &mpsc::Receiver<Msg>) {
    let mut pending = Debouncer::default();
    loop {
        let msg = match pending.wait(Instant::now()) {
            Some(wait) => rx.recv_timeout(wait),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Changed(path)) => {
                let dir = path.parent().unwrap_or(Path::new(""));
                for (_, list) in folders.iter().filter(|(d, _)| d == dir) {
                    for &i in list {
                        pending.add(i, Instant::now());
                    }
                }
            }
            Ok(Msg::All) => {
                pending = Debouncer::default();
                for plugin in plugins {
                    plugin.reload_unless(Skip::Never);
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for i in pending.take_due(Instant::now()) {
            plugins[i].reload_unless(Skip::Unchanged);
        }
    }
}

/// Watches `dirs` with inotify, or by polling when inotify cannot (no instances or watches
/// left, a file system without it); `None`, with a warning, when neither can.
fn open_watcher(dirs: &[&Path], tx: &mpsc::Sender<Msg>) -> Option<Box<dyn Watcher + Send>> {
    match watch_dirs::<RecommendedWatcher>(dirs, tx, Config::default()) {
        Ok(w) => return Some(w),
        Err(e) => tracing::info!("inotify unavailable ({e}): polling the plugin folders"),
    }
    let config = Config::default().with_poll_interval(POLL_EVERY);
    match watch_dirs::<PollWatcher>(dirs, tx, config) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("plugin files are not watched ({e}); SIGHUP reloads them");
            None
        }
    }
}

fn watch_dirs<W: Watcher + Send + 'static>(
    dirs: &[&Path],
    tx: &mpsc::Sender<Msg>,
    config: Config,
) -> notify::Result<Box<dyn Watcher + Send>> {
    let tx = tx.clone();
    let mut watcher = W::new(
        move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                for path in event.paths.into_iter().filter(|p| is_lua(p)) {
                    let _ = tx.send(Msg::Changed(path));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching plugin files: {e}"),
        },
        config,
    )?;
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(Box::new(watcher))
}

/// Plugins with changes not yet reloaded, and when they become due: once no change came for
/// [`QUIET`], or [`MAX_WAIT`] after the first one.
#[derive(Debug, Default)]
struct Debouncer {
    pending: BTreeSet<usize>,
    /// When the first and the last pending change came.
    window: Option<(Instant, Instant)>,
}

impl Debouncer {
    fn add(&mut self, plugin: usize, now: Instant) {
        self.pending.insert(plugin);
        let first = self.window.map_or(now, |(first, _)| first);
        self.window = Some((first, now));
    }

    fn due_at(&self) -> Option<Instant> {
        self.window
            .map(|(first, last)| (last + QUIET).min(first + MAX_WAIT))
    }

    /// How long until changes are due (`None`: nothing pending).
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.due_at().map(|at| at.saturating_duration_since(now))
    }

    /// The plugins due for a reload, if it is time.
    fn take_due(&mut self, now: Instant) -> Vec<usize> {
        match self.due_at() {
            Some(at) if at <= now => {
                self.window = None;
                std::mem::take(&mut self.pending).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_coalesce_until_quiet() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::default();
        assert_eq!(d.wait(t0), None);
        d.add(1, t0);
        d.add(0, ms(100));
        d.add(1, ms(200));
        assert_eq!(d.take_due(ms(300)), Vec::<usize>::new());
        assert_eq!(d.wait(ms(300)), Some(QUIET - Duration::from_millis(100)));
        assert_eq!(d.take_due(ms(350)), vec![0, 1]);
        assert_eq!(d.wait(ms(350)), None);
        assert!(d.take_due(ms(1000)).is_empty());
    }

    #[test]
    fn a_file_rewritten_nonstop_reloads_after_max_wait() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        let mut now = t0;
        let mut reloaded = Vec::new();
        while now < t0 + Duration::from_millis(2500) {
            d.add(0, now);
            if !d.take_due(now).is_empty() {
                reloaded.push(now - t0);
            }
            now += Duration::from_millis(100);
        }
        assert_eq!(
            reloaded,
            [Duration::from_millis(1000), Duration::from_millis(2100)]
        );
    }

    /// Waits for a change to `name` to be reported.
    fn changed(rx: &mpsc::Receiver<Msg>, name: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Msg::Changed(p)) if p.file_name().is_some_and(|n| n == name) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    #[test]
    fn both_backends_see_writes_and_rename_replace() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let plugin = dir_path.join("p.lua");
        std::fs::write(&plugin, "return {}").unwrap();
        let poll = Config::default().with_poll_interval(Duration::from_millis(50));
        for (backend, config) in [("inotify", Config::default()), ("poll", poll)] {
            let (tx, rx) = mpsc::channel();
            let _w = if backend == "inotify" {
                watch_dirs::<RecommendedWatcher>(&[&dir_path], &tx, config)
            } else {
                watch_dirs::<PollWatcher>(&[&dir_path], &tx, config)
            }
            .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            std::fs::write(&plugin, "return { n = 1 }").unwrap();
            assert!(changed(&rx, "p.lua"), "{backend}: write not seen");
            std::thread::sleep(Duration::from_millis(200));
            let temp = dir_path.join("p.tmp");
            std::fs::write(&temp, "return { n = 22 }").unwrap();
            std::fs::rename(&temp, &plugin).unwrap();
            assert!(
                changed(&rx, "p.lua"),
                "{backend}: rename over the file not seen"
            );
        }
    }
}
