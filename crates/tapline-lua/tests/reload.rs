//! Reloading a plugin while flows are open: versions, `flow.state` carried over, `tap.shared`
//! kept, `on_stop`/`on_start` per state, failed versions leaving the old one running.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapline_core::{
    block_on, Chunk, ChunkVerdict, Event, EventKind, Flow, FlowEnd, FlowId, FlowStats, Mode,
    Protocol, Route, Side, Stage, Timestamp,
};
use tapline_lua::{Host, HostConfig, LuaPlugin, ReloadOutcome, Reloader};

/// A plugin whose `on_data` answers `TAG:n`, n counting the flow's chunks in `flow.state`,
/// and that counts its starts and stops per tag in `tap.shared`.
fn source(tag: &str) -> String {
    format!(
        r#"
local p = {{}}
function p.on_start() tap.shared:incr("start_{tag}", 1, 0) end
function p.on_stop() tap.shared:incr("stop_{tag}", 1, 0) end
function p.on_data(chunk, flow)
  flow.state.n = (flow.state.n or 0) + 1
  return "{tag}:" .. flow.state.n
end
return p
"#
    )
}

fn flow(id: u64) -> Arc<Flow> {
    Arc::new(Flow::new(
        FlowId(id),
        Mode::Proxy,
        Protocol::Tcp,
        Route::Forward,
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
        Timestamp::from_secs_micros(1_700_000_000, 0),
    ))
}

/// What `on_data` answers for one chunk of `flow`.
fn data(plugin: &LuaPlugin, flow: &Arc<Flow>) -> String {
    let chunk = Chunk {
        from: Side::Client,
        data: Bytes::from_static(b"x"),
    };
    match block_on(plugin.on_chunk(flow, &chunk)).unwrap() {
        ChunkVerdict::Replace(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("unexpected verdict {other:?}"),
    }
}

fn end(plugin: &LuaPlugin, flow: &Arc<Flow>) {
    let kind = EventKind::FlowEnd {
        stats: FlowStats::default(),
        end: FlowEnd::Fin,
        duration: Duration::ZERO,
    };
    let event = Event::on_flow(flow, Timestamp::from_secs_micros(1_700_000_001, 0), kind);
    block_on(plugin.on_event(&event)).unwrap();
}

fn host(states: usize) -> Host {
    let mut config = HostConfig::new(Mode::Proxy);
    config.states = states;
    Host::new(config)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_reload_moves_flows_to_the_new_version_keeping_flow_state_and_shared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.lua");
    write(&path, &source("v1"));
    let host = host(2);
    let plugin = host.load(&path).unwrap();
    let (a, b) = (flow(1), flow(2));
    assert_eq!(data(&plugin, &a), "v1:1");
    assert_eq!(data(&plugin, &a), "v1:2");
    assert_eq!(data(&plugin, &b), "v1:1");
    assert_eq!(plugin.status().version, 1);

    write(&path, &source("v2"));
    assert_eq!(plugin.reload(), ReloadOutcome::Reloaded { version: 2 });
    let shared = host.shared();
    assert_eq!(
        shared.get_int("start_v1"),
        Some(2),
        "one on_start per state"
    );
    assert_eq!(shared.get_int("stop_v1"), Some(2), "the old states stopped");
    assert_eq!(
        shared.get_int("start_v2"),
        Some(2),
        "the new states started"
    );
    assert_eq!(shared.get_int("stop_v2"), None);

    assert_eq!(data(&plugin, &a), "v2:3", "flow.state came along");
    assert_eq!(data(&plugin, &b), "v2:2");
    assert_eq!(data(&plugin, &flow(3)), "v2:1", "a new flow");
    end(&plugin, &a);
    assert_eq!(data(&plugin, &a), "v2:1", "dropped at the flow's end");

    let status = plugin.status();
    assert_eq!((status.version, status.reloads, status.failures), (2, 1, 0));
    assert_eq!(status.file, path);
    block_on(plugin.on_stop()).unwrap();
    assert_eq!(shared.get_int("stop_v2"), Some(2));
}

#[test]
fn a_broken_version_leaves_the_old_one_running_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.lua");
    write(&path, &source("v1"));
    let host = host(1);
    let plugin = host.load(&path).unwrap();
    let a = flow(1);
    assert_eq!(data(&plugin, &a), "v1:1");

    let broken = [
        ("local p = {\nfunction end\n", "p.lua:2:"),
        ("error('no luck')\n", "p.lua:1: no luck"),
        ("return 42\n", "must return a table"),
        (
            "return { on_start = function() error('cannot start') end }",
            "on_start",
        ),
    ];
    for (i, (text, why)) in broken.iter().enumerate() {
        write(&path, text);
        match plugin.reload() {
            ReloadOutcome::Failed(e) => assert!(e.contains(why), "{e:?} lacks {why:?}"),
            other => panic!("{text:?} reloaded: {other:?}"),
        }
        assert_eq!(
            data(&plugin, &a),
            format!("v1:{}", i + 2),
            "still version 1"
        );
        let status = plugin.status();
        assert_eq!((status.version, status.failures), (1, i as u64 + 1));
        assert!(status.last_error.unwrap().contains(why));
    }
    assert_eq!(host.shared().get_int("stop_v1"), None, "v1 never stopped");

    write(&path, &source("v3"));
    assert_eq!(plugin.reload(), ReloadOutcome::Reloaded { version: 2 });
    assert_eq!(data(&plugin, &a), "v3:6");
    assert_eq!(plugin.status().last_error, None);
    assert_eq!(
        plugin.own_counts(),
        vec![("reloads", 1), ("failed reloads", 4)]
    );
}

/// Whether `done` comes true within 5 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn the_reloader_picks_up_saves_and_ignores_unchanged_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.lua");
    write(&path, &source("v1"));
    let host = host(1);
    let plugin = host.load(&path).unwrap();
    let reloader = Reloader::start(vec![plugin.clone()], true);
    let handle = reloader.handle();
    let version = || handle.statuses()[0].version;
    let a = flow(1);
    std::thread::sleep(Duration::from_millis(100));
    // An editor's save: a temporary file renamed over the plugin.
    let temp = dir.path().join("p.lua.tmp");
    write(&temp, &source("v2"));
    std::fs::rename(&temp, &path).unwrap();
    assert!(eventually(|| data(&plugin, &a).starts_with("v2:")));
    // A module beside it changes: the plugin reloads (it may require it).
    write(&dir.path().join("helper.lua"), "return {}");
    assert!(eventually(|| version() == 3));
    // A touch with the same bytes reloads nothing.
    write(&path, &source("v2"));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(version(), 3);
    // Asked for, a reload happens even without a change.
    handle.reload_all();
    assert!(eventually(|| version() == 4));
    // A file written in two goes, slowly: the first half fails, the whole file reloads.
    let whole = source("v5");
    let (first, rest) = whole.split_at(whole.len() / 2);
    write(&path, first);
    assert!(eventually(|| handle.statuses()[0].failures == 1));
    assert!(
        data(&plugin, &a).starts_with("v2:"),
        "the old version goes on"
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, rest.as_bytes()).unwrap();
    assert!(eventually(|| data(&plugin, &a).starts_with("v5:")));
    let status = handle.statuses().remove(0);
    assert_eq!((status.version, status.last_error), (5, None));
    drop(reloader);
    assert_eq!(plugin.status().reloads, 4);
}
