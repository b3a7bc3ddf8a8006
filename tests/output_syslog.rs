//! `--syslog` end to end: a Lua plugin raises alerts and records on proxied requests, and a
//! real rsyslogd receives them, checked field by field, over UDP and TCP in RFC 5424 and
//! 3164; over TCP, records sent while rsyslog is down arrive once it is back.

mod common;
mod rsyslog;

use std::net::SocketAddr;
use std::time::Duration;

use common::{demo, http_get_via, start_proxy, temp_dir, write_plugin, Proc};
use rsyslog::Rsyslog;

const WAIT: Duration = Duration::from_secs(30);

/// A plugin that alerts on every request and emits a record for every response.
const PLUGIN: &str = r#"
local p = { name = "ua-watch", version = "1.0" }
function p.on_request(req, flow)
    tap.alert("request " .. req.path, { path = req.path, ua = req.headers:get("user-agent") or "" })
end
function p.on_response(resp, flow)
    tap.emit({ status = resp.status })
end
return p
"#;

/// A proxy with the plugin, sending to `syslog` with the extra `args`.
fn syslog_proxy(dir: &tempfile::TempDir, syslog: &str, args: &[&str]) -> (Proc, SocketAddr) {
    let plugin = write_plugin(dir.path(), "ua_watch.lua", PLUGIN);
    let mut all = vec!["--plugin", plugin.to_str().unwrap(), "--syslog", syslog];
    all.extend_from_slice(args);
    start_proxy(&all)
}

#[test]
fn rfc5424_over_tcp_carries_flow_plugin_and_fields() {
    let Some(rsyslog) = Rsyslog::start() else {
        return;
    };
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let (mut p, listen) = syslog_proxy(&dir, &rsyslog.tcp_url(), &[]);
    let url = format!("http://{origin}/bytes/10");
    assert_eq!(http_get_via(listen, &url).0, 200);
    let got = rsyslog.wait_fields(2, WAIT);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());

    let alert = got.iter().find(|f| f[4] == "alert").expect("an alert");
    let [pri, _host, app, procid, _, sd, msg] = &alert[..] else {
        panic!("{alert:?}")
    };
    assert_eq!(pri, "12");
    assert_eq!(app, "tapline");
    assert_eq!(procid, &p.pid().to_string());
    assert!(
        sd.starts_with("[tapline@32473 kind=\"alert\" flow=\"")
            && sd.contains(" mode=\"proxy\" protocol=\"http\" client=\"127.0.0.1:")
            && sd.contains(&format!(" server=\"{origin}\" plugin=\"ua-watch\"]")),
        "{sd}"
    );
    assert!(
        sd.contains("[fields@32473 path=\"/bytes/10\" ua=\"\"]"),
        "{sd}"
    );
    assert!(
        msg.trim().starts_with("ALERT ua-watch http 127.0.0.1:"),
        "{msg}"
    );
    assert!(msg.contains("request /bytes/10"), "{msg}");

    let record = got.iter().find(|f| f[4] == "record").expect("a record");
    assert_eq!(record[0], "14");
    assert!(
        record[5].contains("[fields@32473 status=\"200\"]"),
        "{:?}",
        record
    );
    assert!(
        p.stderr().contains("Syslog messages sent (tcp://"),
        "stats name the syslog counts:\n{}",
        p.stderr()
    );
}

#[test]
fn rfc3164_over_udp_and_wider_event_kinds() {
    let Some(rsyslog) = Rsyslog::start() else {
        return;
    };
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let (mut p, listen) = syslog_proxy(
        &dir,
        &rsyslog.udp_url(),
        &[
            "--syslog-format",
            "3164",
            "--syslog-events",
            "alert,flow_end",
        ],
    );
    assert_eq!(
        http_get_via(listen, &format!("http://{origin}/bytes/10")).0,
        200
    );
    let got = rsyslog.wait_fields(2, WAIT);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    let texts: Vec<&str> = got.iter().map(|f| f[6].trim()).collect();
    let alert = texts
        .iter()
        .find(|t| t.starts_with("kind=alert flow="))
        .unwrap_or_else(|| panic!("{texts:?}"));
    assert!(
        alert.contains(" plugin=ua-watch ALERT ua-watch "),
        "{alert}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("kind=flow_end flow=")),
        "--syslog-events widens to flow_end: {texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.starts_with("kind=record")),
        "records were not asked for: {texts:?}"
    );
    for f in &got {
        assert_eq!(f[2], "tapline");
        assert_eq!(f[3], p.pid().to_string());
        assert_eq!(f[5], "-");
    }
}

#[test]
fn tcp_records_sent_while_rsyslog_is_down_arrive_after_it_returns() {
    let Some(mut rsyslog) = Rsyslog::start() else {
        return;
    };
    let (_demo, origin) = demo();
    let dir = temp_dir();
    let (mut p, listen) = syslog_proxy(&dir, &rsyslog.tcp_url(), &["--syslog-events", "alert"]);
    let get = |n: u32| {
        let url = format!("http://{origin}/bytes/10?n={n}");
        assert_eq!(http_get_via(listen, &url).0, 200);
    };
    for n in 0..3 {
        get(n);
    }
    rsyslog.wait_fields(3, WAIT);
    rsyslog.stop();
    for n in 3..7 {
        get(n);
    }
    std::thread::sleep(Duration::from_millis(500));
    rsyslog.restart();
    let got = rsyslog.wait_fields(7, WAIT);
    assert_eq!(p.stop(Duration::from_secs(15)), Some(0), "{}", p.stderr());
    for n in 0..7 {
        let needle = format!("path=\"/bytes/10?n={n}\"");
        assert_eq!(
            got.iter().filter(|f| f[5].contains(&needle)).count(),
            1,
            "alert {n} arrived exactly once: {got:#?}"
        );
    }
    assert!(
        p.stderr().contains("Syslog messages dropped (tcp://") && p.stderr().contains("): 0"),
        "nothing dropped:\n{}",
        p.stderr()
    );
}
