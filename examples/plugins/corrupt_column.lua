-- corrupt_column.lua: corrupt one column of result sets (default: every column named
-- "email" becomes "corrupted@example.invalid"), to check what an application does with
-- data it did not expect. Column positions come from each result's RowDescription; the rows
-- (DataRow) are rewritten in place and re-encoded by the proxy, NULLs stay NULL.
--   tapline proxy --disable-http-proxy --proxy 6432=psql://127.0.0.1:5432 \
--       --plugin examples/plugins/corrupt_column.lua \
--       --plugin-arg corrupt-column.column=email --plugin-arg corrupt-column.value=oops
local p = { name = "corrupt-column", version = "1.0", messages = { "RowDescription", "DataRow" } }

local column = "email"
local value = "corrupted@example.invalid"

function p.on_start(args)
    column = args.column or column
    value = args.value or value
end

function p.on_message(msg, flow)
    if msg.from ~= "server" then
        return
    end
    if msg.type == "RowDescription" then
        flow.state.at = nil
        for i, c in ipairs(msg.fields.columns or {}) do
            if c.name == column then
                flow.state.at = i
            end
        end
    elseif msg.type == "DataRow" and flow.state.at then
        local values = msg.fields.values
        if values[flow.state.at] ~= nil then
            values[flow.state.at] = value
        end
    end
end

return p
