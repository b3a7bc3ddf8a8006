//! riff compatibility: modules in riff's shape (`init`/`push`/`match`/`action`), riff's
//! `pipeline` module and its `config.lua` whose `format()` returns the BPF filter.
//!
//! For each payload tapline does what riff's `Pipeline.run` does: for every module in order
//! `m:init()`, `m:push(src)` with `src = {metadata = {data = payload}}`, then
//! `m:match(payload)`. A module's returned sink (a table with `metadata`) is the next
//! module's `src`, as riff's source plugin hands its data on. While the modules run, the
//! global `stream` holds `{data = payload}`; when `match` returns `true`, tapline calls
//! `m:action(stream)` (riff's own templates call `action` from `match` themselves).

use std::path::Path;

use mlua::{Function, Lua, Table, Value};

use crate::error::{first_line, LuaError};

/// riff's `pipeline` module, preloaded so `require "pipeline"` works unchanged:
/// `pipeline:new{…}` records the modules, `pipeline:run(data)` runs them once.
const PIPELINE_MODULE: &str = r#"
local Pipeline = {}
function Pipeline.output(self, list, flg)
    if flg == 0 then return end
    for k, v in pairs(list) do print(k, v) end
end
function Pipeline.new(self, elements)
    self.element_list = elements
    return self
end
function Pipeline.run(self, data)
    return __tapline_riff_run(self.element_list, data)
end
return Pipeline
"#;

/// The runner: riff's call order over a list of modules for one payload.
const RUNNER: &str = r#"
return function(modules, payload)
    stream = { data = payload }
    local src = { metadata = { data = payload } }
    for _, m in ipairs(modules) do
        if type(m) ~= "table" then goto continue end
        if type(m.init) == "function" then m:init() end
        if type(m.push) == "function" then m:push(src) end
        local matched, sink = m:match(payload)
        if matched == true and type(m.action) == "function" then m:action(stream) end
        if type(sink) == "table" and type(sink.metadata) == "table" then src = sink end
        ::continue::
    end
end
"#;

/// Makes `require "pipeline"` and `require "plugin.x"` (next to `dir`) work in `lua`.
pub(crate) fn prepare(lua: &Lua, dir: &Path) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let old: String = package.get("path")?;
    let dir = dir.display();
    package.set("path", format!("{dir}/?.lua;{dir}/?/init.lua;{old}"))?;
    let runner: Function = lua.load(RUNNER).set_name("=riff runner").eval()?;
    lua.globals().set("__tapline_riff_run", runner)?;
    let preload: Table = package.get("preload")?;
    let loader = lua.create_function(|lua, ()| {
        lua.load(PIPELINE_MODULE)
            .set_name("=riff pipeline")
            .eval::<Table>()
    })?;
    preload.set("pipeline", loader)
}

/// A loaded riff module list and the runner that drives it.
pub(crate) struct Chain {
    modules: Table,
    runner: Function,
    len: usize,
}

fn is_module(t: &Table) -> bool {
    matches!(t.get::<Value>("match"), Ok(Value::Function(_)))
        && matches!(t.get::<Value>("push"), Ok(Value::Function(_)))
}

impl Chain {
    /// The riff modules a plugin file returned: one module, a list of modules, or riff's
    /// `pipeline` object (`element_list`). `None` when the table is not riff-shaped.
    pub(crate) fn detect(lua: &Lua, value: &Table) -> mlua::Result<Option<Chain>> {
        let modules = if is_module(value) {
            let list = lua.create_table()?;
            list.raw_push(value.clone())?;
            list
        } else if let Ok(Value::Table(list)) = value.get::<Value>("element_list") {
            list
        } else if value.raw_len() > 0 {
            value.clone()
        } else {
            return Ok(None);
        };
        let mut len = 0;
        for m in modules.clone().sequence_values::<Value>() {
            match m? {
                Value::Table(t) if is_module(&t) => len += 1,
                // Lua 5.4's `require` also returns the file it loaded, which a riff
                // `pipeline:new{ require "a", require "b" }` list picks up at its end.
                Value::String(_) => {}
                _ => return Ok(None),
            }
        }
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(Chain {
            modules,
            runner: lua.globals().get("__tapline_riff_run")?,
            len,
        }))
    }

    /// How many modules the chain holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Runs the chain once over `payload`.
    pub(crate) fn run(&self, lua: &Lua, payload: &[u8]) -> mlua::Result<()> {
        self.runner
            .call::<()>((self.modules.clone(), lua.create_string(payload)?))
    }
}

/// The BPF filter of a riff `config.lua`: the string its `format()` returns. `format` may be
/// a global function or a field of the table the file returns (called with that table as
/// `self`); a file that returns a string is taken as the filter itself.
pub fn filter_from_config(path: &Path) -> Result<String, LuaError> {
    let source = std::fs::read(path).map_err(|source| LuaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lua = Lua::new();
    let invalid = |message: String| LuaError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    prepare(&lua, dir).map_err(|e| LuaError::Load(first_line(&e)))?;
    let returned: Value = lua
        .load(source)
        .set_name(format!("@{}", path.display()))
        .eval()
        .map_err(|e| LuaError::Load(first_line(&e)))?;
    let filter: Value = match &returned {
        Value::String(_) => returned.clone(),
        Value::Table(t) => match t.get::<Value>("format") {
            Ok(Value::Function(f)) => f.call(t.clone()),
            _ => call_global_format(&lua),
        }
        .map_err(|e| LuaError::Load(first_line(&e)))?,
        _ => call_global_format(&lua).map_err(|e| LuaError::Load(first_line(&e)))?,
    };
    match filter {
        Value::String(s) => {
            let s = s
                .to_str()
                .map_err(|_| invalid("format() returned a string that is not UTF-8".into()))?
                .trim()
                .to_string();
            if s.is_empty() {
                Err(invalid("format() returned an empty filter".into()))
            } else {
                Ok(s)
            }
        }
        Value::Nil if !has_format(&lua, &returned) => Err(invalid(
            "defines no format() function returning a BPF filter".into(),
        )),
        other => Err(invalid(format!(
            "format() must return a BPF filter string, not {}",
            other.type_name()
        ))),
    }
}

fn has_format(lua: &Lua, returned: &Value) -> bool {
    let global = matches!(lua.globals().get::<Value>("format"), Ok(Value::Function(_)));
    let field = match returned {
        Value::Table(t) => matches!(t.get::<Value>("format"), Ok(Value::Function(_))),
        _ => false,
    };
    global || field
}

fn call_global_format(lua: &Lua) -> mlua::Result<Value> {
    match lua.globals().get::<Value>("format")? {
        Value::Function(f) => f.call(()),
        _ => Ok(Value::Nil),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn config_format_gives_the_filter() {
        let dir = std::env::temp_dir().join(format!("tapline-riff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let global = write(
            &dir,
            "g.lua",
            "local port = 80\nfunction format() return 'dst port ' .. port end\n",
        );
        assert_eq!(filter_from_config(&global).unwrap(), "dst port 80");
        let table = write(
            &dir,
            "t.lua",
            "local c = {port = 5432}\nfunction c.format(self) return 'tcp port ' .. self.port end\nreturn c\n",
        );
        assert_eq!(filter_from_config(&table).unwrap(), "tcp port 5432");
        let none = write(&dir, "n.lua", "x = 1\n");
        assert!(filter_from_config(&none)
            .unwrap_err()
            .to_string()
            .contains("format()"));
        let bad = write(&dir, "b.lua", "function format(\n");
        assert!(filter_from_config(&bad)
            .unwrap_err()
            .to_string()
            .contains("b.lua:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
