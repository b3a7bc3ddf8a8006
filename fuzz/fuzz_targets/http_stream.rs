//! HTTP/1.x stream decoder: any reads and gaps from either side, known HTTP or sniffed.
#![no_main]

#[path = "http_pgsql_script.rs"]
mod script;

use libfuzzer_sys::fuzz_target;
use tapline_core::Protocol;
use tapline_decode::{DecodeConfig, FlowDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let config = DecodeConfig {
        body_limit: 256,
        ..Default::default()
    };
    let decoder = if mode & 1 == 0 {
        FlowDecoder::new(Protocol::Http, &config)
    } else {
        FlowDecoder::for_ports(40000, 8080, &config)
    };
    script::drive(decoder, data);
});
