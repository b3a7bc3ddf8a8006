-- slow_queries.lua: alert on SQL statements slower than N milliseconds (default 100), from
-- paired statements (the on_transaction hook).
--   tapline capture -i lo --plugin examples/plugins/slow_queries.lua \
--       --plugin-arg slow-queries.ms=50 tcp port 5432
local p = { name = "slow-queries", version = "1.0" }

local threshold_ms = 100

function p.on_start(args)
    threshold_ms = tonumber(args.ms) or threshold_ms
end

function p.on_transaction(tx, flow)
    if tx.kind == "postgres" and tx.latency_ms > threshold_ms then
        tap.alert(string.format("slow query: %.1f ms", tx.latency_ms), {
            sql = tx.sql,
            latency_ms = tx.latency_ms,
            rows = tx.rows,
            ok = tx.ok,
            server = flow.server,
        })
    end
end

return p
