-- slow_report.lua: add a delay (default 2 s) to the statements that contain a word (default
-- "monthly_report"), and to no other statement: how does the application behave when its
-- one heavy report query gets slow? The delay is tapline's own (`tap.delay`); the flow's
-- other messages wait behind it as they would behind a slow server, other connections do not.
--   tapline proxy --disable-http-proxy --proxy 6432=psql://127.0.0.1:5432 \
--       --plugin examples/plugins/slow_report.lua --plugin-arg slow-report.word=monthly_report
-- The same with a built-in fault: --with-sql-latency --sql-latency-match monthly_report
--       --sql-latency-mean 2000
local p = { name = "slow-report", version = "1.0", messages = { "Query", "Bind" } }

local word = "monthly_report"
local ms = 2000

function p.on_start(args)
    word = args.word or word
    ms = tonumber(args.ms) or ms
end

function p.on_message(msg, flow)
    if msg.from == "client" and (msg.type == "Query" or msg.type == "Bind") then
        local sql = msg.fields.sql
        if sql and sql:find(word, 1, true) then
            return tap.delay(ms)
        end
    end
end

return p
