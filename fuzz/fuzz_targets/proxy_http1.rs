//! The proxy's own HTTP/1 parsing (heads, framing, chunked bodies) on one side's byte stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tapline_proxy::fuzzing::http1(data));
