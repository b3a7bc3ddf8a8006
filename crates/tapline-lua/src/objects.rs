//! The Lua views of tapline's events as plain tables: flows (cached per flow), chunks,
//! packets, messages (and the edits a hook made to one) and transactions. Byte payloads
//! become Lua strings in one copy. Requests and responses are objects that edit the real
//! messages in place: module `lent`.

use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, Table, Value};
use tapline_core::{Chunk, Flow, FlowEnd, FlowStats, Message, PacketInfo, Transaction};

use crate::api::to_lua_options;

/// A new flow table: `id`, `uid`, `mode`, `protocol`, `route`, `client`, `server`,
/// `started`, `tls` (for flows that carried TLS: `sni`, `intercepted`, `client` and
/// `server` legs), byte totals (filled at the end) and the private `state` table.
pub(crate) fn flow_table(lua: &Lua, flow: &Flow) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 11)?;
    t.raw_set("id", flow.id.to_string())?;
    t.raw_set("uid", flow.uid.to_string())?;
    t.raw_set("mode", flow.mode.as_str())?;
    t.raw_set("protocol", flow.protocol.as_str())?;
    t.raw_set("route", flow.route.as_str())?;
    t.raw_set("client", flow.client.to_string())?;
    t.raw_set("server", flow.server.to_string())?;
    t.raw_set("started", flow.started.as_secs_f64())?;
    if let Some(tls) = &flow.tls {
        let v = lua.to_value_with(tls.as_ref(), to_lua_options())?;
        if let Value::Table(tt) = &v {
            tt.raw_set("intercepted", tls.intercepted())?;
        }
        t.raw_set("tls", v)?;
    }
    t.raw_set("bytes_from_client", 0)?;
    t.raw_set("bytes_from_server", 0)?;
    t.raw_set("state", lua.create_table()?)?;
    Ok(t)
}

/// Writes a flow's end-of-flow totals into its table.
pub(crate) fn finish_flow(
    t: &Table,
    stats: &FlowStats,
    end: &FlowEnd,
    duration: Duration,
) -> mlua::Result<()> {
    t.raw_set("bytes_from_client", stats.bytes_from_client)?;
    t.raw_set("bytes_from_server", stats.bytes_from_server)?;
    t.raw_set("packets_from_client", stats.packets_from_client)?;
    t.raw_set("packets_from_server", stats.packets_from_server)?;
    t.raw_set("duration_ms", duration.as_secs_f64() * 1e3)?;
    t.raw_set("end", end.as_str())?;
    if let Some(reason) = end.reason() {
        t.raw_set("end_reason", reason)?;
    }
    Ok(())
}

/// `chunk`: `data`, `from`.
pub(crate) fn chunk_table(lua: &Lua, chunk: &Chunk) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 2)?;
    t.raw_set("data", lua.create_string(&chunk.data)?)?;
    t.raw_set("from", chunk.from.as_str())?;
    Ok(t)
}

/// `pkt`: `ts`, `len`, `caplen`, `data`, `payload`, `src`, `dst`, `sport`, `dport`, `proto`,
/// `tcp_flags`.
pub(crate) fn packet_table(lua: &Lua, ts: f64, pkt: &PacketInfo) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 11)?;
    t.raw_set("ts", ts)?;
    t.raw_set("len", pkt.len)?;
    t.raw_set("caplen", pkt.caplen)?;
    t.raw_set("data", lua.create_string(&pkt.data)?)?;
    t.raw_set("payload", lua.create_string(&pkt.payload)?)?;
    if let Some(src) = pkt.src {
        t.raw_set("src", src.to_string())?;
    }
    if let Some(dst) = pkt.dst {
        t.raw_set("dst", dst.to_string())?;
    }
    t.raw_set("sport", pkt.sport)?;
    t.raw_set("dport", pkt.dport)?;
    t.raw_set("proto", pkt.proto.as_str())?;
    t.raw_set("tcp_flags", pkt.tcp_flags)?;
    Ok(t)
}

/// `msg`: `protocol`, `from`, `type`, `fields` (SQL NULL as `nil`), `raw`, and `ts` (when it
/// was seen, seconds; capture: the packet's time).
pub(crate) fn message_table(lua: &Lua, ts: f64, msg: &Message) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 6)?;
    t.raw_set("ts", ts)?;
    t.raw_set("protocol", msg.protocol.as_str())?;
    t.raw_set("from", msg.from.as_str())?;
    t.raw_set("type", msg.type_name.as_str())?;
    t.raw_set("fields", lua.to_value_with(&msg.fields, to_lua_options())?)?;
    t.raw_set("raw", lua.create_string(&msg.raw)?)?;
    Ok(t)
}

/// `tx` (the `on_transaction` extension): `kind` (`http`|`postgres`), `latency_ms`, and for
/// HTTP `request` {method, path, url} and `response` {status, reason}; for PostgreSQL `sql`,
/// `params`, `rows`, `tag`, `error_code`, `error_message`, `ok`.
pub(crate) fn transaction_table(lua: &Lua, ts: f64, tx: &Transaction) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("ts", ts)?;
    match tx {
        Transaction::Http {
            request,
            response,
            latency,
        } => {
            t.raw_set("kind", "http")?;
            t.raw_set("latency_ms", millis(*latency))?;
            let req = lua.create_table()?;
            req.raw_set("method", request.method.as_str())?;
            req.raw_set("path", request.path.as_str())?;
            req.raw_set("url", request.url.as_deref())?;
            t.raw_set("request", req)?;
            let resp = lua.create_table()?;
            resp.raw_set("status", response.status)?;
            resp.raw_set("reason", response.reason.as_str())?;
            t.raw_set("response", resp)?;
        }
        Transaction::Postgres(pg) => {
            t.raw_set("kind", "postgres")?;
            t.raw_set("latency_ms", millis(pg.latency))?;
            t.raw_set("sql", pg.sql.as_str())?;
            t.raw_set("params", lua.to_value_with(&pg.params, to_lua_options())?)?;
            t.raw_set("rows", pg.rows)?;
            t.raw_set("tag", pg.tag.as_str())?;
            t.raw_set("error_code", pg.error_code.as_deref())?;
            t.raw_set("error_message", pg.error_message.as_deref())?;
            t.raw_set("ok", pg.error_code.is_none())?;
        }
    }
    Ok(t)
}

/// A duration in milliseconds (float), as Lua objects show latencies.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Reads back the edits an `on_message` hook made to `m` (the table made from `msg`) that
/// the proxy can apply: `fields.sql` (Query, Parse), `fields.tag` (CommandComplete), and
/// the items of `fields.params` (Bind) and `fields.values` (DataRow), `nil` for SQL NULL,
/// read by position up to the message's own count. Other changes stay in Lua.
pub(crate) fn read_message_edits(m: &Table, msg: &mut Message) -> mlua::Result<()> {
    let key = match msg.type_name.as_str() {
        "Query" | "Parse" => "sql",
        "CommandComplete" => "tag",
        "Bind" => "params",
        "DataRow" => "values",
        _ => return Ok(()),
    };
    let Value::Table(fields) = m.raw_get::<Value>("fields")? else {
        return Ok(());
    };
    let Some(old) = msg.fields.get_mut(key) else {
        return Ok(());
    };
    match old {
        serde_json::Value::Array(items) => {
            let Value::Table(list) = fields.raw_get::<Value>(key)? else {
                return Ok(());
            };
            for (i, item) in items.iter_mut().enumerate() {
                if let Some(new) = scalar_json(list.raw_get::<Value>(i + 1)?) {
                    if *item != new {
                        *item = new;
                    }
                }
            }
        }
        old => {
            if let Some(new @ serde_json::Value::String(_)) = scalar_json(fields.raw_get(key)?) {
                if *old != new {
                    *old = new;
                }
            }
        }
    }
    Ok(())
}

/// A Lua scalar as the JSON a message field holds (text, or `null`); tables and functions
/// are not field values.
fn scalar_json(v: Value) -> Option<serde_json::Value> {
    Some(match v {
        Value::Nil => serde_json::Value::Null,
        Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned().into(),
        Value::Integer(n) => n.to_string().into(),
        Value::Number(n) => n.to_string().into(),
        Value::Boolean(b) => b.to_string().into(),
        _ => return None,
    })
}
