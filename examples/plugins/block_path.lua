-- block_path.lua: answer 403 to requests whose path starts with a prefix; the upstream is
-- never contacted (proxy mode).
--   tapline proxy --plugin examples/plugins/block_path.lua --plugin-arg block-path.prefix=/admin
local p = { name = "block-path", version = "1.0" }

local prefix = "/admin"

function p.on_start(args)
    prefix = args.prefix or prefix
end

function p.on_request(req)
    if req.path:sub(1, #prefix) == prefix then
        tap.log("info", "blocked " .. req.method .. " " .. req.path)
        return tap.respond {
            status = 403,
            headers = { ["Content-Type"] = "text/plain" },
            body = "forbidden by tapline\n",
        }
    end
end

return p
