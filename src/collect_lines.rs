//! Human lines for `tapline collect`, rendered from the exported JSON objects: the agent, then
//! what the agent's own human output would say for the meaningful kinds (HTTP exchanges, SQL
//! statements, alerts and records, gaps, flow ends).

use std::fmt::Write as _;

use serde_json::Value;

/// Appends the line for `event` (no newline) to `out`; false when the kind has no human line.
pub fn describe(event: &Value, out: &mut String) -> bool {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let _ = write!(out, "[{}] ", s(&event["agent"]));
    let flow = format!("{} → {}", s(&event["client"]), s(&event["server"]));
    match event["kind"].as_str().unwrap_or("") {
        "http_response" => {
            let _ = write!(
                out,
                "http {} {} {} → {} {} {:.1} ms",
                s(&event["client"]),
                s(&event["method"]),
                event["url"]
                    .as_str()
                    .or(event["path"].as_str())
                    .unwrap_or("-"),
                event["status"],
                s(&event["reason"]),
                num(&event["latency_ms"]),
            );
        }
        "transaction" if event["sql"].is_string() => {
            let outcome = match event["error_code"].as_str() {
                Some(code) => format!("ERROR {code}"),
                None => format!("{} ({} rows)", s(&event["tag"]), event["rows"]),
            };
            let _ = write!(
                out,
                "sql {} {} → {outcome} {:.1} ms",
                s(&event["client"]),
                s(&event["sql"]),
                num(&event["latency_ms"]),
            );
        }
        kind @ ("alert" | "record") => {
            let label = if kind == "alert" { "ALERT" } else { "record" };
            let _ = write!(
                out,
                "{label} {}: {} ({flow})",
                s(&event["plugin"]),
                s(&event["message"])
            );
        }
        "gap" => {
            let _ = write!(
                out,
                "gap {flow} {} B missing from {}",
                event["len"],
                s(&event["from"])
            );
        }
        "flow_end" => {
            let _ = write!(
                out,
                "flow {flow} ↑ {} B ↓ {} B {:.1} ms {}",
                event["bytes_from_client"],
                event["bytes_from_server"],
                num(&event["duration_ms"]),
                s(&event["end"]),
            );
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_meaningful_kinds_with_their_agent() {
        let line = |v: Value| {
            let mut out = String::new();
            describe(&v, &mut out).then_some(out)
        };
        let response = serde_json::json!({
            "kind": "http_response", "agent": "edge-1", "client": "127.0.0.1:5",
            "method": "GET", "url": "http://a/b", "status": 200, "reason": "OK",
            "latency_ms": 1.25
        });
        assert_eq!(
            line(response).unwrap(),
            "[edge-1] http 127.0.0.1:5 GET http://a/b → 200 OK 1.2 ms"
        );
        assert_eq!(
            line(serde_json::json!({"kind": "flow_start", "agent": "a"})),
            None
        );
    }
}
