-- ua_watch.lua: alert when an HTTP request's User-Agent contains a word.
-- riff's own example ("find the scanner input"), as a tapline plugin:
--   tapline capture -i lo --plugin examples/plugins/ua_watch.lua \
--       --plugin-arg ua-watch.word=pcap tcp port 80
local p = { name = "ua-watch", version = "1.0" }

local word = "pcap"

function p.on_start(args)
    if args.word and args.word ~= "" then
        word = args.word
    end
end

function p.on_request(req, flow)
    local ua = req.headers:get("User-Agent")
    if ua and ua:find(word, 1, true) then
        tap.alert("User-Agent contains " .. word, {
            user_agent = ua,
            method = req.method,
            path = req.path,
            client = flow.client,
        })
    end
end

return p
