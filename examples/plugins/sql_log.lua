-- sql_log.lua: one record per SQL statement with its outcome, rows and latency, built from
-- PostgreSQL wire messages (simple Query, and Parse/Bind/Execute).
--   tapline proxy --disable-http-proxy --proxy 6432=psql://127.0.0.1:5432 \
--       --plugin examples/plugins/sql_log.lua --json
local p = { name = "sql-log", version = "1.0" }

-- flow.state holds, per connection: `query` (the simple Query being answered; it may hold
-- several statements, each answered by its own CommandComplete or ErrorResponse), `parsed`
-- (the last Parse's text) and `executes` (Executes waiting for their answer, in order).
local function pending(flow)
    local s = flow.state
    s.executes = s.executes or {}
    return s
end

local function answered(flow, msg, outcome, extra)
    local s = pending(flow)
    local stmt = table.remove(s.executes, 1) or s.query
    if not stmt then
        return
    end
    local fields = {
        message = stmt.sql,
        sql = stmt.sql,
        outcome = outcome,
        latency_ms = math.floor((msg.ts - stmt.ts) * 1e6 + 0.5) / 1e3,
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
        s.query = { sql = f.sql or "", ts = msg.ts }
    elseif t == "Parse" then
        s.parsed = f.sql or ""
    elseif t == "Execute" then
        table.insert(s.executes, { sql = s.parsed or "", ts = msg.ts })
    elseif t == "CommandComplete" then
        answered(flow, msg, "ok", { tag = f.tag })
    elseif t == "ErrorResponse" then
        answered(flow, msg, "error", { code = f.code, error = f.message })
    elseif t == "ReadyForQuery" then
        -- The exchange is over: statements skipped after an error never complete.
        s.query = nil
        s.executes = {}
    end
end

return p
