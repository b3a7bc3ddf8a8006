//! The proxy's message-by-message PostgreSQL relay: any bytes from either side framed as the
//! relay frames them, each whole message fed on its own (with or without its fields), and
//! edits of the decoded fields re-encoded. Framing must always progress and stay within what
//! was read; a re-encoded message must announce its own length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tapline_core::{EventKind, Protocol, Side, Timestamp};
use tapline_decode::pgsql::{encode, Frame};
use tapline_decode::{DecodeConfig, FlowDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut data)) = data.split_first() else {
        return;
    };
    let mut decoder = FlowDecoder::new(Protocol::Postgres, &DecodeConfig::default());
    let mut pending = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    let mut ts = 0;
    while let Some((&ctrl, rest)) = data.split_first() {
        let side = if ctrl & 1 == 0 { Side::Client } else { Side::Server };
        let len = usize::from(ctrl >> 1).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        data = tail;
        ts += 1;
        let buf = &mut pending[side as usize];
        buf.extend_from_slice(piece);
        loop {
            match decoder.pg_frame(side, buf) {
                Frame::NeedMore => break,
                Frame::Raw => {
                    decoder.feed(side, Timestamp(ts), buf, &mut out);
                    buf.clear();
                    break;
                }
                Frame::Whole(n) => {
                    assert!(n > 0 && n <= buf.len(), "frame of {n} in {}", buf.len());
                    let msg: Vec<u8> = buf.drain(..n).collect();
                    let _ = decoder.pg_message_type(side, &msg);
                    decoder.feed_pg_message(side, Timestamp(ts), &msg, mode & 1 == 0, &mut out);
                    for event in out.drain(..) {
                        if let EventKind::Message(m) = event {
                            edit(&msg, m, mode);
                        }
                    }
                }
            }
        }
        out.clear();
    }
});

/// Edits the message's editable fields the way a plugin might and re-encodes it.
fn edit(raw: &[u8], mut m: tapline_core::Message, mode: u8) {
    let before = m.fields.clone();
    let new = match mode >> 1 & 3 {
        0 => Value::Null,
        1 => Value::String("\\x00ff".into()),
        2 => Value::String("\\xzz".into()),
        _ => Value::String("edited".into()),
    };
    for key in ["sql", "tag"] {
        if let Some(v) = m.fields.get_mut(key) {
            *v = Value::String("select 'edited'".into());
        }
    }
    for key in ["params", "values"] {
        if let Some(Value::Array(items)) = m.fields.get_mut(key) {
            if let Some(first) = items.first_mut() {
                *first = new.clone();
            }
        }
    }
    if let Some(bytes) = encode::edited(raw, &before, &m) {
        assert_eq!(encode::announced_len(&bytes), Some(bytes.len()));
    }
}
