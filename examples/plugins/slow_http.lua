-- slow_http.lua: alert on HTTP exchanges slower than N milliseconds (default 100), from
-- paired request and response (the on_transaction hook). The same plugin works on a capture
-- and in the proxy (where the latency includes what faults added):
--   tapline capture -r traffic.pcap --plugin examples/plugins/slow_http.lua
--   tapline proxy --plugin examples/plugins/slow_http.lua --plugin-arg slow-http.ms=40 \
--       --with-latency --latency-mean 50
local p = { name = "slow-http", version = "1.0" }

local threshold_ms = 100

function p.on_start(args)
    threshold_ms = tonumber(args.ms) or threshold_ms
end

function p.on_transaction(tx, flow)
    if tx.kind ~= "http" or tx.latency_ms <= threshold_ms then
        return
    end
    tap.alert(string.format("slow %s %s: %.1f ms", tx.request.method, tx.request.path, tx.latency_ms), {
        status = tx.response.status,
        latency_ms = tx.latency_ms,
        mode = flow.mode,
        flow_uid = flow.uid,
    })
end

return p
