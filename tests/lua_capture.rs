//! Lua plugins in `tapline capture`: the example plugins and every observe hook over the
//! shared captures (`-r`), verdicts counted but never applied, and a riff-style pair of
//! plugins running unchanged against a live capture on `lo` of
//! `curl --user-agent "pcap testcase"`, as in riff's article.
mod common;

use std::time::Duration;

use common::*;

fn example(name: &str) -> String {
    repo_root()
        .join("examples/plugins")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn from_plugin<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
    plugin: &str,
) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["plugin"] == plugin)
        .collect()
}

/// The `errors`/`ignored verdicts` numbers of a stage's end-of-run stats line.
fn stat(stderr: &str, stage: &str, what: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("{stage}: calls")))
        .unwrap_or_else(|| panic!("no stats for {stage}: {stderr}"));
    line.split(&format!("{what} "))
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {what} in {line}"))
}

#[test]
fn http_examples_over_a_recorded_capture() {
    let Some(file) = shared_pcap("http-keepalive-5-gets.pcap") else {
        return;
    };
    let (code, events, stderr) = capture(&[
        "-r",
        file.to_str().unwrap(),
        "--plugin",
        &example("http_stats.lua"),
        "--plugin",
        &example("ua_watch.lua"),
        "--plugin-arg",
        "ua-watch.word=Firefox",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let summary = from_plugin(&events, "record", "http-stats");
    assert_eq!(summary.len(), 1, "one summary at on_stop: {summary:?}");
    assert_eq!(summary[0]["message"], "http status summary");
    assert_eq!(summary[0]["fields"]["total"], 5);
    assert_eq!(
        summary[0]["fields"]["counts"],
        serde_json::json!({"200": 5})
    );
    let alerts = from_plugin(&events, "alert", "ua-watch");
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    assert_eq!(alerts[0]["message"], "User-Agent contains Firefox");
    assert_eq!(alerts[0]["fields"]["path"], "/style/enhanced.css");
    assert!(alerts[0]["fields"]["user_agent"]
        .as_str()
        .unwrap()
        .contains("Firefox/3.5.5"));
    assert_eq!(stat(&stderr, "http-stats", "errors"), 0);
}

#[test]
fn sql_examples_over_a_recorded_capture() {
    let Some(file) = shared_pcap("pgsql-simple-query-scram-errors.pcap") else {
        return;
    };
    let (code, events, stderr) = capture(&[
        "-r",
        file.to_str().unwrap(),
        "--plugin",
        &example("sql_log.lua"),
        "--plugin",
        &example("slow_queries.lua"),
        "--plugin-arg",
        "slow-queries.ms=-1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let statements = from_plugin(&events, "record", "sql-log");
    assert_eq!(
        statements.len(),
        22,
        "one record per query: {statements:#?}"
    );
    let errors: Vec<_> = statements
        .iter()
        .filter(|r| r["fields"]["outcome"] == "error")
        .collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let division = statements
        .iter()
        .find(|r| r["fields"]["sql"] == "SELECT 1/0;")
        .unwrap();
    assert_eq!(division["fields"]["outcome"], "error");
    assert_eq!(division["fields"]["code"], "22012");
    let begin = &statements[0]["fields"];
    assert_eq!(
        (begin["sql"].as_str(), begin["tag"].as_str()),
        (Some("BEGIN;"), Some("BEGIN"))
    );
    assert!(begin["latency_ms"].as_f64().unwrap() >= 0.0);
    // Every paired statement is over a negative threshold: one alert each.
    let slow = from_plugin(&events, "alert", "slow-queries");
    assert_eq!(slow.len(), 22, "{slow:#?}");
    assert_eq!(stat(&stderr, "sql-log", "errors"), 0);
    assert_eq!(stat(&stderr, "slow-queries", "errors"), 0);
}

#[test]
fn observe_hooks_see_packets_flows_and_chunks_and_verdicts_are_only_counted() {
    let Some(file) = shared_pcap("http-keepalive-5-gets.pcap") else {
        return;
    };
    let dir = temp_dir();
    let plugin = write_plugin(
        dir.path(),
        "observer.lua",
        r#"
local p = { name = "observer" }
function p.on_packet(pkt, flow)
  tap.shared:incr("packets", 1)
  tap.shared:incr("payload", #pkt.payload)
  if flow then tap.shared:incr("packets_in_flows", 1) end
end
function p.on_flow_start(flow) tap.emit{ message = "start", id = flow.id, mode = flow.mode } end
function p.on_data(chunk, flow)
  flow.state[chunk.from] = (flow.state[chunk.from] or 0) + #chunk.data
  return tap.close("never applied in capture")
end
function p.on_request(req) req.path = "/changed"; return tap.respond{ status = 403 } end
function p.on_flow_end(flow)
  tap.emit{ message = "end", client = flow.state.client, server = flow.state.server,
            bytes_from_client = flow.bytes_from_client, bytes_from_server = flow.bytes_from_server }
end
function p.on_stop()
  if tap.shared:incr("stopped", 1) == 1 then
    tap.emit{ message = "packets", n = tap.shared:get("packets"), payload = tap.shared:get("payload"),
              in_flows = tap.shared:get("packets_in_flows") }
  end
end
return p
"#,
    );
    let (code, events, stderr) = capture(&[
        "-r",
        file.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let records = from_plugin(&events, "record", "observer");
    let by = |m: &str| {
        records
            .iter()
            .find(|r| r["message"] == m)
            .unwrap_or_else(|| panic!("{m}: {records:#?}"))
    };
    assert_eq!(by("start")["fields"]["mode"], "capture");
    let end = &by("end")["fields"];
    assert!(end["client"].as_u64() > Some(0), "{end}");
    assert_eq!(
        end["client"], end["bytes_from_client"],
        "on_data saw every client byte: {end}"
    );
    assert_eq!(end["server"], end["bytes_from_server"], "{end}");
    let packets = &by("packets")["fields"];
    // Every packet event of the run (the capture's own count) reached on_packet.
    let delivered: u64 = stderr
        .lines()
        .find(|l| l.starts_with("tapline: events:"))
        .and_then(|l| l.split(" packet ").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no packet count: {stderr}"));
    assert!((48..=49).contains(&delivered), "{stderr}");
    assert_eq!(packets["n"], delivered, "{packets}");
    // All but a late packet after both FINs (a loose packet, flow = nil) belong to the flow.
    let in_flows = packets["in_flows"].as_u64().unwrap();
    assert!((delivered - 1..=delivered).contains(&in_flows), "{packets}");
    assert_eq!(packets["payload"], 42362, "stream bytes: {packets}");
    // Verdicts are ignored (every request is reported, with its response); in-place edits
    // are what later stages and the outputs see (redaction, say).
    let paths: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "http_request")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/changed"; 5]);
    let responses = events
        .iter()
        .filter(|e| e["kind"] == "http_response")
        .count();
    assert_eq!(
        responses, 5,
        "403 answers are never applied in capture mode"
    );
    assert!(
        stat(&stderr, "observer", "ignored verdicts") >= 6, // 5 answers, 1+ closes
        "{stderr}"
    );
    assert_eq!(stat(&stderr, "observer", "errors"), 0);
}

/// riff's plugin template (from its article), with `action` as given.
fn riff_template(name: &str, action: &str) -> String {
    format!(
        r#"local {name} = {{}}
local src = {{
   args="{name} args"
}}

local sink = {{
    name = "{name}",
    ver = "0.1"
}}
function {name}.output(self, list, flg)
    if flg == 0 then
        return
    end
    for k,v in pairs(list) do
        print(k,v)
    end
end
function {name}.push(self, stream)
    for k,v in pairs(stream.metadata) do
        self.source[k]=v
    end
end
function  {name}.init(self)
    self.source = src
    self.sink = sink
end
function {name}.action(self, stream)
{action}
end
function  {name}.match(self, param)
    self.sink['found_flg']=false
    for kn,kv in pairs(self.source) do
         self.sink[kn] = kv
    end
    self.sink['metadata'] = {{ data=self.source['data'] }}
    self:action(self.sink)
    return self.source, self.sink
end
return  {name}
"#
    )
}

/// riff's filter action: print the payload, and the marker when it holds "pcap".
const FILTER_ACTION: &str = r##"    io.write(stream.data, "\n")
    local flg = string.find(stream.data, "pcap")
    if flg then
        print(string.rep("#", 11) .. "[ OK ]" .. string.rep("#", 13))
    end"##;

#[test]
fn riff_plugins_run_unchanged_against_a_live_capture() {
    if !can_capture() {
        return;
    }
    if !have("curl") {
        return;
    }
    let dir = temp_dir();
    let source = write_plugin(
        dir.path(),
        "plugin/source_plugin.lua",
        &riff_template("source_plugin", ""),
    );
    let filter = write_plugin(
        dir.path(),
        "plugin/filter_plugin.lua",
        &riff_template("filter_plugin", FILTER_ACTION),
    );
    // riff's own pipeline file, chaining the two through `require`.
    let pipeline = write_plugin(
        dir.path(),
        "pipeline_config.lua",
        r#"local pipeline = require "pipeline"
local status = pipeline:new {
    require"plugin.source_plugin",
    require"plugin.filter_plugin",
}
return pipeline
"#,
    );
    let (_demo, addr) = demo();
    for plugins in [vec![source.clone(), filter.clone()], vec![pipeline.clone()]] {
        let mut cmd = tapline();
        cmd.args(["capture", "-i", "lo", "--quiet"]);
        for p in &plugins {
            cmd.arg("--plugin").arg(p);
        }
        cmd.args(["tcp", "port", &addr.port().to_string()]);
        let mut cap = Proc::spawn("tapline capture", cmd);
        cap.wait_output("listening on lo", Duration::from_secs(20));
        curl_ok(&["--user-agent", "pcap testcase", &format!("http://{addr}/")]);
        cap.wait_output("###########[ OK ]#############", Duration::from_secs(20));
        assert_eq!(
            cap.stop(Duration::from_secs(20)),
            Some(0),
            "{}",
            cap.stderr()
        );
        let stdout = cap.stdout();
        assert!(
            stdout.contains("User-Agent: pcap testcase"),
            "action printed the payload: {stdout}"
        );
        assert_eq!(
            stdout.matches("[ OK ]").count(),
            1,
            "only the request holds the word: {stdout}"
        );
        assert!(
            !cap.stderr().contains("lua plugin"),
            "no hook errors: {}",
            cap.stderr()
        );
    }
}

#[test]
fn plugins_check_describes_lua_and_riff_plugins() {
    let dir = temp_dir();
    let filter = write_plugin(
        dir.path(),
        "filter_plugin.lua",
        &riff_template("filter_plugin", FILTER_ACTION),
    );
    let (code, stdout, stderr) = run_tapline(&[
        "plugins",
        "check",
        "--plugin",
        &example("ua_watch.lua"),
        "--plugin",
        filter.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ua-watch 1.0"), "{stdout}");
    assert!(stdout.contains("hooks on_start, on_request"), "{stdout}");
    assert!(stdout.contains("filter_plugin - "), "{stdout}");
    assert!(stdout.contains("riff-style, 1 module"), "{stdout}");
    let bad = write_plugin(
        dir.path(),
        "bad.lua",
        "return {\n  on_data = function(\n}\n",
    );
    let (code, stdout, stderr) =
        run_tapline(&["plugins", "check", "--plugin", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("bad.lua:3:"), "{stderr}");
    let port = free_port();
    let (code, stdout, _) = run_tapline(&[
        "plugins",
        "check",
        "--plugin-timeout",
        "1s",
        "--grpc-plugin",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
}
