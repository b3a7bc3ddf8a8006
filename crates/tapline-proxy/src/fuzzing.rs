//! The proxy's HTTP/1 parsing driven by arbitrary bytes, for the cargo-fuzz target
//! `proxy_http1` (`fuzz/`). Not an API: heads and framing stay private to the crate, and
//! this is the one door the fuzzer needs.

use bytes::BytesMut;

use crate::framing::{self, BodyReader};
use crate::head::{write_fields, FramingFields, RequestHead, ResponseHead};

/// Parses `data` as the messages one side of a connection sends — a request stream, or a
/// response stream when bit 0 of the first byte is set — read in pieces of the size the
/// first byte gives. Heads, framing and bodies go through what the proxy runs on them;
/// panics (the fuzzer's findings) are the only failures.
pub fn http1(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let responses = mode & 1 == 1;
    let head_request = mode & 2 == 2;
    let piece = usize::from(mode >> 2).max(1);
    let mut buf = BytesMut::new();
    let mut body: Option<BodyReader> = None;
    let mut payload = Vec::new();
    for read in data.chunks(piece) {
        buf.extend_from_slice(read);
        loop {
            if let Some(reader) = body.as_mut() {
                let before = buf.len();
                let Ok(n) = reader.take(&buf, Some(&mut payload)) else {
                    return;
                };
                assert!(n <= before, "took more than there was");
                assert_eq!(reader.payload as usize, payload.len(), "payload miscounted");
                let _ = buf.split_to(n);
                if !reader.is_done() {
                    break;
                }
                body = None;
                payload.clear();
            }
            let framing = if responses {
                match ResponseHead::parse(&mut buf) {
                    Ok(Some(head)) => {
                        let _ = head.view();
                        rewrite(head.fields.iter());
                        framing::of_response(&head.fields, head.status, head_request)
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            } else {
                match RequestHead::parse(&mut buf) {
                    Ok(Some(head)) => {
                        let _ = (head.keep_alive(), head.expects_continue(), head.upgrade());
                        let _ = head.view(head.target(), String::new(), "h");
                        rewrite(head.fields.iter());
                        framing::of_request(&head.fields)
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            };
            match framing {
                Ok(framing) => body = Some(BodyReader::new(framing)),
                Err(_) => return,
            }
        }
    }
    if let Some(mut reader) = body {
        let _ = reader.eof();
    }
}

/// Writes a head's fields on for the next hop, every way the proxy does.
fn rewrite<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) {
    let mut out = Vec::new();
    for framing in [
        FramingFields::Keep,
        FramingFields::DropLength,
        FramingFields::Drop,
    ] {
        write_fields(&mut out, fields.clone(), framing);
    }
}
