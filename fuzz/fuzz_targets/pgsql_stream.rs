//! PostgreSQL stream decoder: any reads and gaps from either side, known or sniffed.
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
    let config = DecodeConfig::default();
    let decoder = if mode & 1 == 0 {
        FlowDecoder::new(Protocol::Postgres, &config)
    } else {
        FlowDecoder::for_ports(40000, 5432, &config)
    };
    script::drive(decoder, data);
});
