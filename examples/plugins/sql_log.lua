-- sql_log.lua: one record per SQL statement with its outcome, rows and latency, built from
-- PostgreSQL wire messages (simple Query, and Parse/Bind/Execute).
--   tapline proxy --disable-http-proxy --proxy 6432=psql://127.0.0.1:5432 \
--       --plugin examples/plugins/sql_log.lua --json
local p = { name = "sql-log", version = "1.0" }

-- Per flow: the statement waiting for its answer and the last parsed statement text.
local function pending(flow)
    local s = flow.state
    s.queue = s.queue or {}
    return s
end

local function finish(flow, msg, outcome, extra)
    local s = pending(flow)
    local stmt = table.remove(s.queue, 1)
    if not stmt then
        return
    end
    local fields = {
        message = stmt.sql,
        sql = stmt.sql,
        outcome = outcome,
        latency_ms = math.floor((msg.ts - stmt.ts) * 1e6 + 0.5) / 1e3,
        flow = flow.id,
    }
    for k, v in pairs(extra) do
        fields[k] = v
    end
    tap.emit(fields)
end

function p.on_message(msg, flow)
    local s = pending(flow)
    local t, f = msg.type, msg.fields or {}
    if t == "Query" then
        table.insert(s.queue, { sql = f.sql or "", ts = msg.ts })
    elseif t == "Parse" then
        s.parsed = f.sql or ""
    elseif t == "Execute" then
        table.insert(s.queue, { sql = s.parsed or "", ts = msg.ts })
    elseif t == "CommandComplete" then
        finish(flow, msg, "ok", { tag = f.tag })
    elseif t == "ErrorResponse" then
        finish(flow, msg, "error", { code = f.code, error = f.message })
    end
end

return p
