-- retry_rehearsal.lua: fail a share (default 10%) of the statements that update orders with
-- a serialization failure (40001), to exercise an application's retry path against a real
-- database. The failed statement never reaches the server; inside a transaction block the
-- client sees the block aborted until it rolls back, exactly as after a real conflict.
--   tapline proxy --disable-http-proxy --proxy 6432=psql://127.0.0.1:5432 \
--       --plugin examples/plugins/retry_rehearsal.lua \
--       --plugin-arg retry-rehearsal.share=0.1 --plugin-arg 'retry-rehearsal.match=^%s*update%s+orders'
-- The same with a built-in fault, no plugin:
--   --with-sql-error --sql-error-code 40001 --sql-error-match '^\s*update\s+orders' \
--       --sql-error-probability 0.1
local p = { name = "retry-rehearsal", version = "1.0", messages = { "Query", "Bind" } }

local share = 0.1
-- A Lua pattern, matched against the lower-cased SQL.
local match = "^%s*update%s+orders"

function p.on_start(args)
    share = tonumber(args.share) or share
    match = args.match or match
end

function p.on_message(msg, flow)
    -- Query: a simple statement; Bind: an execution of a prepared one (its `sql` is the
    -- statement it was prepared from).
    if msg.from ~= "client" or (msg.type ~= "Query" and msg.type ~= "Bind") then
        return
    end
    local sql = msg.fields.sql
    if sql and sql:lower():find(match) and math.random() < share then
        tap.shared:incr("rehearsed", 1)
        return tap.pg_error{
            code = "40001",
            message = "could not serialize access due to concurrent update (rehearsed by tapline)",
        }
    end
end

function p.on_stop()
    tap.emit{ message = "serialization failures rehearsed", count = tap.shared:get("rehearsed") or 0 }
end

return p
