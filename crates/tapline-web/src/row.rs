//! One row of the view: an event the table lists (a transaction, a flow's end, a plugin's
//! record or alert) as the JSON object of its JSON line, plus what the detail pane shows and
//! the line leaves out (HTTP heads and bodies), and the facts the server filters on.

use serde_json::Value;
use tapline_core::{Event, EventKind, Kind, Transaction};

/// Body bytes kept per HTTP message for the detail pane.
const BODY_CAP: usize = 64 * 1024;

/// An event as the view holds it.
#[derive(Debug)]
pub struct Row {
    /// Its place in the run's sequence of rows (1, 2, …): the live stream's event id.
    pub id: u64,
    /// The row as one JSON object (`id` first, its line's fields, the detail fields).
    pub json: String,
    /// What filters read.
    pub facts: Facts,
}

/// The fields a row is filtered on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `http`, `postgres`, `tcp`, … (the flow's protocol), or `plugin` for records/alerts.
    pub protocol: String,
    /// The server end (`host:port`) and, for HTTP, the URL's host.
    pub host: String,
    /// HTTP status.
    pub status: Option<u16>,
    /// An HTTP status of 400 or more, an SQLSTATE, an alert, or an abnormal flow end.
    pub error: bool,
    /// Method and path or URL, SQL text, or a plugin's message.
    pub text: String,
}

/// The event kinds that become rows.
pub const ROW_KINDS: [Kind; 4] = [Kind::Transaction, Kind::FlowEnd, Kind::Record, Kind::Alert];

/// The row for `event` (its id is given when the history takes it), if the table lists
/// its kind. Its JSON is written straight from the event (no value tree on the way).
pub fn row(event: &Event) -> Option<Row> {
    if !ROW_KINDS.contains(&event.kind.kind()) {
        return None;
    }
    let flow = event.flow.as_ref();
    let mut facts = Facts {
        protocol: flow.map_or("plugin", |f| f.protocol.as_str()).to_string(),
        host: flow.map(|f| f.server.to_string()).unwrap_or_default(),
        ..Facts::default()
    };
    match &event.kind {
        EventKind::Transaction(Transaction::Http {
            request, response, ..
        }) => {
            if let Some(url) = &request.url {
                facts.host.push(' ');
                facts.host.push_str(url);
            }
            facts.status = Some(response.status);
            facts.error = response.status >= 400;
            facts.text = format!("{} {}", request.method, request.path);
        }
        EventKind::Transaction(Transaction::Postgres(pg)) => {
            facts.error = pg.error_code.is_some();
            facts.text = pg.sql.clone();
        }
        EventKind::FlowEnd { end, .. } => facts.error = end.reason().is_some(),
        EventKind::Record(r) | EventKind::Alert(r) => {
            facts.error = event.kind.kind() == Kind::Alert;
            facts.text = r.message.clone();
        }
        _ => {}
    }
    let mut json = Vec::with_capacity(1024);
    tapline_output::json::write_detailed(event, BODY_CAP, &mut json);
    let json = String::from_utf8(json).ok()?;
    Some(Row { id: 0, json, facts })
}

/// The row for an event's JSON object (as [`row`] makes it, or a JSON line as `tapline
/// collect` receives it), if the table lists its kind.
pub fn from_object(value: Value) -> Option<Row> {
    let kind = value["kind"].as_str()?;
    if !matches!(kind, "transaction" | "flow_end" | "record" | "alert") {
        return None;
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut facts = Facts {
        protocol: value["protocol"].as_str().unwrap_or("plugin").to_string(),
        host: text(&value["server"]),
        ..Facts::default()
    };
    match kind {
        "transaction" if value.get("sql").is_some() => {
            facts.error = !value["error_code"].is_null();
            facts.text = text(&value["sql"]);
        }
        "transaction" => {
            let (request, status) = (&value["request"], value["response"]["status"].as_u64());
            if let Some(url) = request["url"].as_str() {
                facts.host.push(' ');
                facts.host.push_str(url);
            }
            facts.status = status.and_then(|s| u16::try_from(s).ok());
            facts.error = status.is_some_and(|s| s >= 400);
            facts.text = format!("{} {}", text(&request["method"]), text(&request["path"]));
        }
        "flow_end" => facts.error = value.get("reason").is_some_and(|r| !r.is_null()),
        _ => {
            facts.error = kind == "alert";
            facts.text = text(&value["message"]);
        }
    }
    let json = serde_json::to_string(&value).ok()?;
    Some(Row { id: 0, json, facts })
}
