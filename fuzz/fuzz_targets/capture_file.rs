//! The capture-file path end to end: the input is written as a file and read by
//! `tapline capture`'s library (libpcap's reader for pcap/pcapng, then the workers' decode,
//! reassembly and flow decoders) into a pipeline. It must end with an error or a result,
//! never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tapline_capture::{Capture, CaptureConfig, Limits, SourceSpec};
use tapline_core::{NullSink, Pipeline};
use tapline_decode::DecodeConfig;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("tapline-fuzz-capture-{}.pcap", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let config = CaptureConfig {
        source: SourceSpec::File(path.clone()),
        filter: None,
        count: None,
        write: None,
        workers: 1,
        limits: Limits {
            max_flows: 64,
            max_buffer: 1 << 16,
            ..Limits::default()
        },
        decode: DecodeConfig {
            body_limit: 512,
            ..Default::default()
        },
    };
    let Ok(capture) = Capture::open(config) else {
        return;
    };
    let pipeline = Pipeline::new(Vec::new(), Arc::new(NullSink));
    let _ = capture.run(&pipeline, &AtomicBool::new(false));
});
