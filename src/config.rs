//! `--config tapline.toml`: every command-line option as a TOML key, plus the ordered
//! `pipeline`. The file is turned into flags placed before the user's own, so flags given on
//! the command line override it (clap keeps the last value of a single-valued option) and
//! one parser validates both.
//!
//! ```toml
//! json = true                          # any long option, without the dashes
//! plugin-timeout = "2s"
//! proxy = ["9098=psql://127.0.0.1:5432"]
//! pipeline = [                         # plugins in order (before the built-in faults)
//!   { lua = "examples/plugins/ua_watch.lua" },
//!   { grpc = "http://127.0.0.1:50051" },
//! ]
//! [plugin-args.ua-watch]               # --plugin-arg ua-watch.word=pcap
//! word = "pcap"
//! [proxy-options]                      # keys only for `tapline proxy` (likewise capture-options)
//! with-latency = true
//! ```

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::usage;

/// Returns argv with the config file's options inserted after the subcommand, or argv
/// unchanged when no `--config` is given.
pub fn expand_argv(argv: Vec<String>) -> anyhow::Result<Vec<String>> {
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let Some(sub_at) = subcommand_end(&argv) else {
        return Ok(argv);
    };
    let subcommand = argv[sub_at].clone();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {path}"))?;
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => usage!("config file {path}: {}", e.message()),
    };
    let known = long_options(&subcommand);
    let mut flags = Vec::new();
    for (key, value) in &table {
        match key.as_str() {
            "pipeline" => pipeline_flags(&path, value, &mut flags)?,
            "plugin-args" | "plugin_args" => plugin_arg_flags(&path, value, &mut flags)?,
            k if k.ends_with("-options") || k.ends_with("_options") => {
                let sub = k.trim_end_matches("-options").trim_end_matches("_options");
                if sub == subcommand {
                    let Some(inner) = value.as_table() else {
                        usage!("config file {path}: [{k}] must be a table");
                    };
                    for (k, v) in inner {
                        option_flags(&path, &known, k, v, &mut flags)?;
                    }
                }
            }
            k => option_flags(&path, &known, k, value, &mut flags)?,
        }
    }
    let mut out = argv[..=sub_at].to_vec();
    out.extend(flags);
    out.extend_from_slice(&argv[sub_at + 1..]);
    Ok(out)
}

/// The value of `--config FILE` / `--config=FILE`, if any.
fn config_path(argv: &[String]) -> Option<String> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(String::from)
        }
    })
}

/// Index of the last word naming the subcommand (`proxy`, `capture`, `demo`, `ca`,
/// `plugins check`).
fn subcommand_end(argv: &[String]) -> Option<usize> {
    let i = argv
        .iter()
        .skip(1)
        .position(|a| matches!(a.as_str(), "proxy" | "capture" | "demo" | "ca" | "plugins"))?
        + 1;
    if argv[i] == "plugins" {
        (argv.get(i + 1).map(String::as_str) == Some("check")).then_some(i + 1)
    } else {
        Some(i)
    }
}

/// The long option names the subcommand accepts.
fn long_options(subcommand: &str) -> Vec<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let sub = if subcommand == "check" {
        cmd.find_subcommand("plugins")
            .and_then(|p| p.find_subcommand("check"))
            .cloned()
    } else {
        cmd.find_subcommand(subcommand).cloned()
    };
    sub.map(|s| {
        s.get_arguments()
            .flat_map(|a| {
                let mut names: Vec<String> = a.get_long().map(String::from).into_iter().collect();
                names.extend(
                    a.get_all_aliases()
                        .unwrap_or_default()
                        .into_iter()
                        .map(String::from),
                );
                names
            })
            .collect()
    })
    .unwrap_or_default()
}

fn option_flags(
    path: &str,
    known: &[String],
    key: &str,
    value: &toml::Value,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    let name = key.replace('_', "-");
    if name == "config" {
        usage!("config file {path}: 'config' cannot be set from a config file");
    }
    if !known.contains(&name) {
        // Keys for the other subcommand are allowed at top level only when they exist there.
        if ["proxy", "capture", "demo", "ca", "check"]
            .iter()
            .any(|s| long_options(s).contains(&name))
        {
            return Ok(());
        }
        usage!("config file {path}: unknown option '{key}'");
    }
    let flag = format!("--{name}");
    match value {
        toml::Value::Boolean(true) => out.push(flag),
        toml::Value::Boolean(false) => {}
        toml::Value::Array(items) => {
            for item in items {
                out.push(flag.clone());
                out.push(scalar(path, key, item)?);
            }
        }
        v => {
            out.push(flag);
            out.push(scalar(path, key, v)?);
        }
    }
    Ok(())
}

fn scalar(path: &str, key: &str, value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => usage!("config file {path}: '{key}' must be a string, number or boolean"),
    })
}

fn pipeline_flags(path: &str, value: &toml::Value, out: &mut Vec<String>) -> anyhow::Result<()> {
    let Some(items) = value.as_array() else {
        usage!("config file {path}: pipeline must be a list like [{{ lua = \"p.lua\" }}, {{ grpc = \"http://…\" }}]");
    };
    for item in items {
        let entry = item
            .as_table()
            .and_then(|t| t.iter().next().filter(|_| t.len() == 1));
        match entry {
            Some((kind, toml::Value::String(target))) if kind == "lua" => {
                out.push("--plugin".into());
                out.push(target.clone());
            }
            Some((kind, toml::Value::String(target))) if kind == "grpc" => {
                out.push("--grpc-plugin".into());
                out.push(target.clone());
            }
            _ => usage!("config file {path}: each pipeline entry is {{ lua = \"FILE\" }} or {{ grpc = \"URL\" }}"),
        }
    }
    Ok(())
}

fn plugin_arg_flags(path: &str, value: &toml::Value, out: &mut Vec<String>) -> anyhow::Result<()> {
    let Some(plugins) = value.as_table() else {
        usage!("config file {path}: [plugin-args] must be a table of tables");
    };
    for (plugin, args) in plugins {
        let Some(args) = args.as_table() else {
            usage!("config file {path}: [plugin-args.{plugin}] must be a table");
        };
        for (k, v) in args {
            out.push("--plugin-arg".into());
            out.push(format!("{plugin}.{k}={}", scalar(path, k, v)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn with_config(toml: &str, args: &str) -> anyhow::Result<Vec<String>> {
        let dir = std::env::temp_dir().join(format!("tapline-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.toml", toml.len()));
        std::fs::write(&file, toml).unwrap();
        expand_argv(argv(&args.replace("CFG", file.to_str().unwrap())))
    }

    #[test]
    fn file_options_come_before_command_line_flags() {
        let out = with_config(
            "json = true\nplugin-timeout = \"5s\"\nproxy = [\"9098=psql://127.0.0.1:5432\"]\npipeline = [{ lua = \"a.lua\" }, { grpc = \"http://127.0.0.1:1\" }]\n[plugin-args.ua-watch]\nword = \"pcap\"\n",
            "tapline --config CFG proxy --plugin-timeout 1s",
        )
        .unwrap();
        let joined = out.join(" ");
        assert!(joined.contains("proxy --json"), "{joined}");
        assert!(joined.ends_with("--plugin-timeout 1s"), "{joined}");
        assert!(
            joined.contains("--plugin a.lua --grpc-plugin http://127.0.0.1:1"),
            "{joined}"
        );
        assert!(
            joined.contains("--plugin-arg ua-watch.word=pcap"),
            "{joined}"
        );
        assert!(
            joined.contains("--proxy 9098=psql://127.0.0.1:5432"),
            "{joined}"
        );
    }

    #[test]
    fn unknown_keys_are_usage_errors() {
        let err = with_config("no-such-thing = 1\n", "tapline --config CFG proxy").unwrap_err();
        assert!(
            err.to_string().contains("unknown option 'no-such-thing'"),
            "{err}"
        );
    }

    #[test]
    fn subcommand_sections_apply_only_to_their_subcommand() {
        let toml = "[proxy-options]\nwith-latency = true\n[capture-options]\nmax-flows = 10\n";
        let proxy = with_config(toml, "tapline --config CFG proxy")
            .unwrap()
            .join(" ");
        assert!(
            proxy.contains("--with-latency") && !proxy.contains("max-flows"),
            "{proxy}"
        );
        let capture = with_config(toml, "tapline --config CFG capture -r x")
            .unwrap()
            .join(" ");
        assert!(
            capture.contains("--max-flows 10") && !capture.contains("latency"),
            "{capture}"
        );
    }
}
