//! `tapline capture`: checks the flags, opens the source (so interface, filter and file errors
//! come first), builds outputs and the pipeline, then reads on this thread while worker
//! threads decode, until the source ends, `-c`, a signal or `--duration`; then stops cleanly
//! and prints the capture's stats on stderr.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tapline_capture::{
    Capture, CaptureConfig, CaptureError, FileFormat, Limits, LiveSpec, LiveStats, SourceSpec,
    WriteConfig,
};
use tapline_core::{Mode, StageContext};
use tapline_decode::DecodeConfig;

use crate::cli::CaptureArgs;
use crate::exit::usage;
use crate::shutdown::Shutdown;

/// Runs a capture until the source ends, `-c`, a signal or `--duration`.
pub fn run(args: CaptureArgs) -> anyhow::Result<()> {
    if args.list_interfaces {
        return list_interfaces();
    }
    let source = source(&args)?;
    let config = CaptureConfig {
        source: source.clone(),
        filter: filter(&args)?,
        count: args.count,
        write: write(&args)?,
        workers: workers(&args)?,
        limits: limits(&args)?,
        decode: match DecodeConfig::from_args(args.plugins.body_limit, &args.plugins.decode) {
            Ok(d) => d,
            Err(e) => usage!("--decode: {e}"),
        },
    };
    let capture = Capture::open(config).map_err(capture_error)?;
    if !capture.link_decoded() {
        tracing::warn!(
            "link type {} ({}) is not decoded: packets are counted (and written with -w), not decoded",
            capture.linktype(),
            capture.linktype_name()
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let outputs = crate::outputs::build(&args.output, Mode::Capture, None)?;
    let ctx = StageContext {
        sink: outputs.sink.clone(),
    };
    let stages = runtime.block_on(crate::stages::build(
        &args.plugins,
        None,
        Mode::Capture,
        &ctx,
    ))?;
    let pipeline = crate::stages::pipeline(stages.all, outputs.sink.clone(), &args.plugins);
    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let _entered = runtime.enter();
        if args.output.metrics.is_some() {
            register_capture_metrics(&outputs, &capture.live_stats());
        }
        outputs.serve_metrics(&pipeline)?;
        outputs.serve_web(&pipeline, &stages.lua)?;
        let mut shutdown = Shutdown::install(args.duration);
        let flag = stop.clone();
        runtime.spawn(async move {
            shutdown.wait().await;
            flag.store(true, Ordering::Relaxed);
        });
        // A file is read in moments: only a live capture reloads its plugins.
        match source {
            SourceSpec::Live(_) => crate::stages::reloader(stages.lua, &args.plugins),
            SourceSpec::File(_) => None,
        }
    };
    match &source {
        SourceSpec::Live(live) => eprintln!(
            "tapline: listening on {}, link type {} ({})",
            live.interface,
            capture.linktype(),
            capture.linktype_name()
        ),
        SourceSpec::File(path) => tracing::info!("reading {}", path.display()),
    }

    let outcome = capture.run(&pipeline, &stop);
    drop(reloader);
    runtime.block_on(pipeline.stop());
    outputs.finish(&pipeline);
    let outcome = outcome.map_err(capture_error)?;
    if let (Some(message), SourceSpec::File(path)) = (&outcome.source_error, &source) {
        eprintln!(
            "tapline: warning: {}: stopped at a damaged record after {} packets: {message}",
            path.display(),
            outcome.stats.packets
        );
    }
    if let Some(message) = &outcome.write_error {
        eprintln!("tapline: warning: -w: {message}");
    }
    if outcome.file_limit {
        eprintln!(
            "tapline: -W {}: the last -G file is written",
            args.file_count.unwrap_or_default()
        );
    }
    eprintln!("tapline: capture: {}", outcome.stats);
    if outputs.source_ended() && !stop.load(Ordering::Relaxed) {
        eprintln!("tapline: the capture ended; the web view stays up until Ctrl-C or --duration");
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Exposes the capture's running counters (packets, kernel drops) in `--metrics`.
fn register_capture_metrics(outputs: &crate::outputs::Outputs, live: &Arc<LiveStats>) {
    let metrics = outputs.metrics();
    type Field = fn(&LiveStats) -> &AtomicU64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "tapline_capture_packets_total",
            "Packets read from the capture source.",
            |l| &l.packets,
        ),
        (
            "tapline_capture_bytes_total",
            "Captured bytes read from the source.",
            |l| &l.bytes,
        ),
        (
            "tapline_capture_kernel_received_total",
            "Packets the kernel handed to the capture (live).",
            |l| &l.kernel_received,
        ),
        (
            "tapline_capture_dropped_packets_total",
            "Packets the kernel or interface dropped (live).",
            |l| &l.kernel_dropped,
        ),
    ];
    for (name, help, field) in counters {
        let live = live.clone();
        metrics.register(name, help, &[], move || {
            field(&live).load(Ordering::Relaxed)
        });
    }
}

/// `-D`: one interface a line, numbered as tcpdump does.
fn list_interfaces() -> anyhow::Result<()> {
    let interfaces = tapline_capture::list_interfaces()?;
    for (n, i) in interfaces.iter().enumerate() {
        let mut line = format!("{}.{}", n + 1, i.name);
        if let Some(d) = &i.description {
            line.push_str(&format!(" ({d})"));
        }
        if !i.flags.is_empty() {
            line.push_str(&format!(" [{}]", i.flags.join(", ")));
        }
        println!("{line}");
    }
    Ok(())
}

/// Exactly one of `-i` and `-r`.
fn source(args: &CaptureArgs) -> anyhow::Result<SourceSpec> {
    match (&args.interface, &args.read) {
        (Some(interface), None) => {
            if args.snaplen <= 0 {
                usage!("-s {}: the snap length must be positive", args.snaplen);
            }
            let direction = match &args.direction {
                None => None,
                Some(text) => match text.parse() {
                    Ok(direction) => Some(direction),
                    Err(e) => usage!("-Q: {e}"),
                },
            };
            let buffer_size = match args.buffer_size {
                None => None,
                Some(0) => usage!("-B 0: the buffer size must be at least 1 KiB"),
                Some(kib) => match i32::try_from(u64::from(kib) * 1024) {
                    Ok(bytes) => Some(bytes),
                    Err(_) => usage!("-B {kib}: the buffer size must be under 2 GiB"),
                },
            };
            Ok(SourceSpec::Live(LiveSpec {
                snaplen: args.snaplen,
                promisc: !args.no_promisc,
                direction,
                buffer_size,
                immediate: args.immediate_mode,
                ..LiveSpec::new(interface.clone())
            }))
        }
        (None, Some(path)) => {
            for (given, flag) in [
                (args.direction.is_some(), "-Q"),
                (args.buffer_size.is_some(), "-B"),
                (args.no_promisc, "-p"),
                (args.immediate_mode, "--immediate-mode"),
            ] {
                if given {
                    usage!("{flag} applies to live captures (-i), not to -r");
                }
            }
            Ok(SourceSpec::File(path.clone()))
        }
        (Some(_), Some(_)) => usage!("-i and -r are exclusive: capture live or read a file"),
        (None, None) => {
            usage!("tapline capture needs -i IFACE (live) or -r FILE (a pcap/pcapng file); -D lists interfaces")
        }
    }
}

/// The BPF filter from exactly one place: `-f`, trailing words, or `--filter-from`.
fn filter(args: &CaptureArgs) -> anyhow::Result<Option<String>> {
    let words = (!args.filter_words.is_empty()).then(|| args.filter_words.join(" "));
    let given = [
        args.filter.is_some(),
        words.is_some(),
        args.filter_from.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        usage!("give the BPF filter one way only: -f EXPR, trailing words, or --filter-from FILE");
    }
    if let Some(path) = &args.filter_from {
        return match tapline_lua::riff::filter_from_config(path) {
            Ok(filter) => Ok(Some(filter)),
            Err(e) => usage!("--filter-from {}: {e}", path.display()),
        };
    }
    Ok(args.filter.clone().or(words))
}

/// `-w` and how its files rotate (`-C`, `-G`, `-W`, `--pcapng`), checked as tcpdump would.
fn write(args: &CaptureArgs) -> anyhow::Result<Option<WriteConfig>> {
    let Some(path) = &args.write else {
        for (given, flag) in [
            (args.file_size.is_some(), "-C"),
            (args.rotate_seconds.is_some(), "-G"),
            (args.file_count.is_some(), "-W"),
            (args.pcapng, "--pcapng"),
        ] {
            if given {
                usage!("{flag} needs -w FILE");
            }
        }
        return Ok(None);
    };
    let rotate_size = match args.file_size {
        None => None,
        Some(0) => usage!("-C 0: the file size must be at least 1 (million bytes)"),
        Some(millions) => match millions.checked_mul(1_000_000) {
            Some(bytes) => Some(bytes),
            None => usage!("-C {millions}: too large"),
        },
    };
    let rotate_every = match args.rotate_seconds {
        None => None,
        Some(0) => usage!("-G 0: the rotation interval must be at least 1 second"),
        Some(seconds) => Some(Duration::from_secs(seconds)),
    };
    match args.file_count {
        Some(0) => usage!("-W 0: the file count must be at least 1"),
        Some(_) if rotate_size.is_none() && rotate_every.is_none() => {
            usage!("-W needs -C (a ring of files) or -G (a number of files)")
        }
        _ => {}
    }
    if path.as_os_str() == "-" && (rotate_size.is_some() || rotate_every.is_some()) {
        usage!("-C and -G need a file name for -w, not - (standard output)");
    }
    Ok(Some(WriteConfig {
        format: if args.pcapng {
            FileFormat::Pcapng
        } else {
            FileFormat::Pcap
        },
        rotate_size,
        rotate_every,
        files: args.file_count,
        ..WriteConfig::new(path)
    }))
}

fn workers(args: &CaptureArgs) -> anyhow::Result<usize> {
    match args.workers {
        Some(0) => usage!("--workers must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

fn limits(args: &CaptureArgs) -> anyhow::Result<Limits> {
    if args.max_flows == 0 {
        usage!("--max-flows must be at least 1");
    }
    if args.flow_timeout < Duration::from_millis(1) {
        usage!("--flow-timeout must be at least 1ms");
    }
    Ok(Limits {
        max_flows: args.max_flows,
        max_buffer: args.max_buffer,
        flow_timeout: args.flow_timeout,
    })
}

/// Configuration mistakes exit 2, the rest 1.
fn capture_error(e: CaptureError) -> anyhow::Error {
    if e.is_usage() {
        anyhow::Error::new(crate::exit::UsageError(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}
