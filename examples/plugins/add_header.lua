-- add_header.lua: add a header to every proxied HTTP request (proxy mode).
--   tapline proxy --plugin examples/plugins/add_header.lua \
--       --plugin-arg add-header.name=X-Debug --plugin-arg add-header.value=on
local p = { name = "add-header", version = "1.0" }

local name, value = "X-Tapline", "1"

function p.on_start(args)
    name = args.name or name
    value = args.value or value
end

function p.on_request(req)
    req.headers:add(name, value)
end

return p
