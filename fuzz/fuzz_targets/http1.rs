//! The shared HTTP/1 codec (`tapline_decode::http1`) on one side's byte stream, as the proxy
//! reads it (strict) and as the passive decoder reads it (lenient): heads, framing, bodies
//! in any piece size (chunked with trailers, gaps skipped), and heads written back out.
//!
//! The first byte sets the mode: bit 0 responses (else requests), bit 1 the responses answer
//! a `HEAD`, bit 2 lenient, bit 3 skip a byte of body now and then (a capture gap); the rest
//! is the read size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapline_decode::http1::write::{write_fields, FramingFields};
use tapline_decode::http1::{BodyReader, RequestHead, ResponseHead, Strictness};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let responses = mode & 1 == 1;
    let head_request = mode & 2 == 2;
    let strictness = if mode & 4 == 4 {
        Strictness::Lenient
    } else {
        Strictness::Strict
    };
    let gaps = mode & 8 == 8;
    let piece = usize::from(mode >> 4).max(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut body: Option<BodyReader> = None;
    let mut payload = Vec::new();
    for (i, read) in data.chunks(piece).enumerate() {
        buf.extend_from_slice(read);
        loop {
            if let Some(reader) = body.as_mut() {
                if gaps && i % 7 == 3 && reader.skip(1) {
                    assert!(reader.payload() >= payload.len() as u64);
                }
                let before = buf.len();
                let Ok(n) = reader.take(&buf, |p| payload.extend_from_slice(p)) else {
                    return;
                };
                assert!(n <= before, "took more than there was");
                buf.drain(..n);
                if !reader.is_done() {
                    break;
                }
                let _ = reader.trailers();
                body = None;
                payload.clear();
            }
            let (size, framing) = if responses {
                match ResponseHead::parse(&buf, strictness) {
                    Ok(Some(head)) => {
                        let _ = (head.to_response(), head.keep_alive(), head.reason());
                        rewrite(head.fields().iter());
                        (head.size(), head.framing(head_request, strictness))
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            } else {
                match RequestHead::parse(&buf, strictness) {
                    Ok(Some(head)) => {
                        let _ = (head.keep_alive(), head.expects_continue(), head.upgrade());
                        let owned = head.to_owned();
                        assert_eq!(owned.target(), head.target());
                        let _ = owned.to_request(head.target(), None);
                        rewrite(head.fields().iter());
                        (head.size(), head.framing(strictness))
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            };
            buf.drain(..size);
            match framing {
                Ok(framing) => body = Some(BodyReader::keeping_trailers(framing)),
                Err(_) => return,
            }
        }
    }
    if let Some(mut reader) = body {
        let _ = reader.eof();
    }
});

/// Writes a head's fields on for the next hop, every way the proxy does.
fn rewrite<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) {
    let mut out = Vec::new();
    for framing in [
        FramingFields::Keep,
        FramingFields::DropLength,
        FramingFields::DropCoding,
        FramingFields::Drop,
    ] {
        write_fields(&mut out, fields.clone(), framing);
    }
}
