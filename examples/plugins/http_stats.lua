-- http_stats.lua: count HTTP response status codes across every worker in tap.shared, and
-- emit one summary record when the run stops.
--   tapline capture -r traffic.pcap --plugin examples/plugins/http_stats.lua --json
local p = { name = "http-stats", version = "1.0" }

local PREFIX = "http_stats.status."

function p.on_response(resp)
    tap.shared:incr(PREFIX .. resp.status, 1)
    tap.shared:incr("http_stats.total", 1)
end

function p.on_stop()
    -- on_stop runs in every Lua state; the first one to get here writes the summary.
    if tap.shared:incr("http_stats.summarized", 1) ~= 1 then
        return
    end
    local counts = {}
    for _, key in ipairs(tap.shared:get_keys(0)) do
        local code = key:match("^http_stats%.status%.(%d+)$")
        if code then
            counts[code] = tap.shared:get(key)
        end
    end
    tap.emit {
        message = "http status summary",
        total = tap.shared:get("http_stats.total") or 0,
        counts = counts,
    }
end

return p
