//! The command line: every flag of DESIGN.md, parsed by clap. Values are checked here where a
//! type can say what is valid; the rest is checked when the run is built (exit 2 either way).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

mod collect;
mod faults;
mod outputs;
mod replay;
mod tls;

pub use collect::CollectArgs;
pub use faults::FaultArgs;
pub use outputs::{BrokerArgs, OutputArgs, SyslogFormat, WebArgs};
pub use replay::{PgSslMode, ReplayArgs};
pub use tls::{CaArgs, TlsArgs, UpstreamTls};

/// Capture and model network traffic through a pipeline of plugins.
#[derive(Debug, Parser)]
#[command(
    name = "tapline",
    version,
    about,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// A TOML file holding any option below plus the ordered `pipeline`; flags override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Intercepting proxy: HTTP forward proxy with CONNECT tunnels, plus mapping proxies.
    Proxy(Box<ProxyArgs>),
    /// Passive capture from an interface or a pcap/pcapng file.
    Capture(Box<CaptureArgs>),
    /// Send captured HTTP and PostgreSQL traffic again to a target and compare the outcomes.
    Replay(Box<ReplayArgs>),
    /// A small HTTP origin to try the proxy against.
    Demo(DemoArgs),
    /// tapline's CA for TLS interception: make it (on first use), show where it is and how
    /// to trust it.
    Ca(CaArgs),
    /// Plugin tools.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Read the events agents exported (--export) from a broker and write them to outputs;
    /// collectors with the same --group share the work.
    Collect(CollectArgs),
}

/// `tapline plugins …`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Load Lua plugins and connect to gRPC plugins; print their metadata and capabilities.
    Check(PluginArgs),
}

/// `tapline proxy`
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address of the HTTP forward proxy (also serves CONNECT tunnels).
    #[arg(long, default_value = "127.0.0.1:3180", value_name = "ADDR")]
    pub proxy_address: SocketAddr,
    /// Do not start the HTTP forward proxy (mapping proxies only).
    #[arg(long)]
    pub disable_http_proxy: bool,
    /// A mapping proxy LISTEN=SCHEME://HOST:PORT (SCHEME tcp|psql|postgres|postgresql|http|https);
    /// LISTEN is a port or ADDR:PORT (host defaults to 127.0.0.1). Repeatable.
    #[arg(
        long = "proxy",
        visible_alias = "proxy-proto",
        value_name = "LISTEN=SCHEME://HOST:PORT"
    )]
    pub mappings: Vec<String>,
    /// Stop by itself after this long (e.g. 30s, 5m); fault schedules are fractions of it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Write what the proxy carried as a pcap file (synthesised TCP packets per flow).
    #[arg(short = 'w', long = "write", value_name = "FILE.pcap")]
    pub write: Option<PathBuf>,
    /// Upstream connect timeout (502/504 after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Close connections idle for this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Most client connections open at once (lowered, with a warning, to what the
    /// open-files limit carries: six descriptors per relayed connection).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_connections: usize,
    /// Largest accepted request or response head, in bytes.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_header_size: usize,
    /// Plugins and decoding.
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// TLS interception.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Network faults.
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Where events go.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `tapline capture`
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Capture live on this interface.
    #[arg(short = 'i', long, value_name = "IFACE", conflicts_with = "read")]
    pub interface: Option<String>,
    /// Read packets from a pcap or pcapng file.
    #[arg(short = 'r', long, value_name = "FILE")]
    pub read: Option<PathBuf>,
    /// BPF filter expression (as tcpdump); trailing words are joined into one too.
    #[arg(short = 'f', long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Take the BPF filter from a riff-style config.lua whose format() returns it.
    #[arg(long, value_name = "FILE")]
    pub filter_from: Option<PathBuf>,
    /// Stop after this many packets.
    #[arg(short = 'c', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Bytes captured per packet.
    #[arg(short = 's', long, default_value_t = 262_144, value_name = "SNAPLEN")]
    pub snaplen: i32,
    /// Do not put the interface in promiscuous mode (it is, by default, as with tcpdump).
    #[arg(short = 'p', long = "no-promiscuous-mode")]
    pub no_promisc: bool,
    /// Only packets received (in), sent (out) or both (inout) by the interface (live).
    #[arg(short = 'Q', long = "direction", value_name = "in|out|inout")]
    pub direction: Option<String>,
    /// The kernel's capture buffer, in KiB (live; libpcap's default otherwise).
    #[arg(short = 'B', long = "buffer-size", value_name = "KiB")]
    pub buffer_size: Option<u32>,
    /// Hand each packet on as it arrives instead of in the kernel's blocks (at most 100 ms
    /// late); on Linux this leaves room for far fewer packets in the buffer (raise -B).
    #[arg(long)]
    pub immediate_mode: bool,
    /// Write the filtered packets to a pcap file (with -G, a strftime pattern).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Write pcapng instead of pcap (interface name, drop counts when the file closes).
    #[arg(long)]
    pub pcapng: bool,
    /// Start a new -w file once one holds more than SIZE million bytes (FILE, FILE1, …).
    #[arg(short = 'C', value_name = "SIZE")]
    pub file_size: Option<u64>,
    /// Start a new -w file every SECONDS (the -w name is a strftime pattern, local time).
    #[arg(short = 'G', value_name = "SECONDS")]
    pub rotate_seconds: Option<u64>,
    /// With -C: a ring of COUNT files, overwriting the oldest; with -G: stop after COUNT
    /// files.
    #[arg(short = 'W', value_name = "COUNT")]
    pub file_count: Option<u32>,
    /// List capture interfaces and exit.
    #[arg(short = 'D', long)]
    pub list_interfaces: bool,
    /// Stop by itself after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Most TCP/UDP flows tracked at once (the oldest idle flow is evicted past it).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub max_flows: usize,
    /// Most out-of-order bytes buffered across all flows.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_buffer: u64,
    /// A flow idle this long is ended (timeout).
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub flow_timeout: Duration,
    /// Worker threads that decode and run plugins (flows are pinned to one by hash).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Plugins and decoding.
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// Where events go.
    #[command(flatten)]
    pub output: OutputArgs,
    /// BPF filter words, as tcpdump takes them.
    #[arg(trailing_var_arg = true, value_name = "FILTER")]
    pub filter_words: Vec<String>,
}

/// `tapline demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub address: SocketAddr,
    /// Stop by itself after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
}

/// Plugin and decoding options shared by proxy, capture and `plugins check`.
#[derive(Debug, Args, Clone, Default)]
pub struct PluginArgs {
    /// A Lua plugin file (tapline or riff style). Repeatable; order is pipeline order.
    #[arg(long = "plugin", value_name = "FILE.lua")]
    pub lua: Vec<PathBuf>,
    /// Every `--plugin` and `--grpc-plugin` in the order given (set by [`Cli::parse_from_argv`]).
    #[arg(skip)]
    pub pipeline: Vec<PluginSpec>,
    /// An argument for a Lua plugin's on_start, NAME.key=value. Repeatable.
    #[arg(long = "plugin-arg", value_name = "NAME.key=value")]
    pub plugin_args: Vec<String>,
    /// A gRPC plugin address (http://HOST:PORT). Repeatable or comma-separated.
    #[arg(long = "grpc-plugin", value_delimiter = ',', value_name = "URL")]
    pub grpc: Vec<String>,
    /// How long a gRPC plugin call may take.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub plugin_timeout: Duration,
    /// What a failed plugin call does to the flow.
    #[arg(long, value_enum, default_value_t = FailurePolicy::Open)]
    pub plugin_failure: FailurePolicy,
    /// Do not watch the --plugin files for changes (SIGHUP still reloads them).
    #[arg(long)]
    pub no_plugin_watch: bool,
    /// Time budget of one Lua hook call.
    #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub hook_budget: Duration,
    /// Largest body kept for plugins and outputs (bodies stream past it, truncated).
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub body_limit: u64,
    /// Force a protocol on a port: PORT=http|postgres|tcp. Repeatable.
    #[arg(long = "decode", value_name = "PORT=PROTO")]
    pub decode: Vec<String>,
}

/// One plugin as declared on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSpec {
    /// `--plugin FILE.lua`
    Lua(PathBuf),
    /// `--grpc-plugin URL`
    Grpc(String),
}

impl Cli {
    /// Parses `argv` like [`Parser::try_parse_from`], and records in `plugins.pipeline` the
    /// order in which `--plugin` and `--grpc-plugin` values were given: clap keeps each
    /// flag's values in order, and their positions tell the interleaving.
    pub fn parse_from_argv(argv: &[String]) -> Result<Cli, clap::Error> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let (plugins, sub) = match &mut cli.command {
            Command::Proxy(a) => (&mut a.plugins, matches.subcommand_matches("proxy")),
            Command::Capture(a) => (&mut a.plugins, matches.subcommand_matches("capture")),
            Command::Replay(a) => (&mut a.plugins, matches.subcommand_matches("replay")),
            Command::Plugins(PluginsCommand::Check(a)) => (
                a,
                matches
                    .subcommand_matches("plugins")
                    .and_then(|m| m.subcommand_matches("check")),
            ),
            Command::Demo(_) | Command::Ca(_) | Command::Collect(_) => return Ok(cli),
        };
        if let Some(sub) = sub {
            plugins.pipeline = declared_order(plugins, sub);
        }
        Ok(cli)
    }
}

/// The plugins of `args` sorted by where clap found each value.
fn declared_order(args: &PluginArgs, matches: &ArgMatches) -> Vec<PluginSpec> {
    let indices = |id: &str| -> Vec<usize> {
        matches
            .indices_of(id)
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let mut positioned: Vec<(usize, PluginSpec)> = indices("lua")
        .into_iter()
        .zip(&args.lua)
        .map(|(i, p)| (i, PluginSpec::Lua(p.clone())))
        .collect();
    positioned.extend(
        indices("grpc")
            .into_iter()
            .zip(&args.grpc)
            .map(|(i, u)| (i, PluginSpec::Grpc(u.clone()))),
    );
    positioned.sort_by_key(|(i, _)| *i);
    positioned.into_iter().map(|(_, s)| s).collect()
}

/// What a failed plugin call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum FailurePolicy {
    /// Forward the original data, count and warn.
    #[default]
    Open,
    /// Close the flow.
    Closed,
}

/// Parses `2s`, `300ms`, `5m`, `1h30m`; a bare number is milliseconds (lueur's style).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<f64>() {
        return if ms.is_finite() && ms >= 0.0 {
            Ok(Duration::from_secs_f64(ms / 1000.0))
        } else {
            Err(format!("'{s}' is not a duration (negative or not finite)"))
        };
    }
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration: {e}"))
}

/// Parses `1048576`, `64KiB`, `1MiB`, `256MB`, `2GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("'{s}' has an unknown size unit '{other}'")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_bare_milliseconds_and_units() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64kb").unwrap(), 64_000);
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn interleaved_plugins_keep_their_order() {
        let argv: Vec<String> = "tapline proxy --grpc-plugin http://x:1,http://y:2 --plugin a.lua \
             --grpc-plugin=http://z:3 --plugin b.lua"
            .split_whitespace()
            .map(String::from)
            .collect();
        let Command::Proxy(args) = Cli::parse_from_argv(&argv).unwrap().command else {
            panic!("a proxy command");
        };
        assert_eq!(
            args.plugins.pipeline,
            vec![
                PluginSpec::Grpc("http://x:1".into()),
                PluginSpec::Grpc("http://y:2".into()),
                PluginSpec::Lua("a.lua".into()),
                PluginSpec::Grpc("http://z:3".into()),
                PluginSpec::Lua("b.lua".into()),
            ]
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
