//! What a proxy reads before deciding what a connection is: PostgreSQL's first message
//! (`SSLRequest`, `GSSENCRequest`, direct TLS or cleartext) and a client's TLS hello, fed in
//! pieces of any size. Neither may panic; a decision, once made, holds as more bytes come;
//! the hello reader keeps every byte it was given.
//!
//! The first byte is the piece size; the rest is the connection's first bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapline_tls::pg_start::{classify, PgStart};
use tapline_tls::{Hello, HelloReader};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut reader = HelloReader::new();
    let mut hello = Hello::Incomplete;
    let mut start = PgStart::NeedMore;
    let mut fed = 0;
    for chunk in data.chunks(piece) {
        fed += chunk.len();
        let now = classify(&data[..fed]);
        if start != PgStart::NeedMore {
            assert_eq!(now, start, "a PostgreSQL start, once told, stays told");
        }
        start = now;
        let verdict = reader.feed(chunk);
        if hello != Hello::Incomplete {
            assert_eq!(
                std::mem::discriminant(&verdict),
                std::mem::discriminant(&hello),
                "a hello verdict, once given, stays"
            );
        }
        hello = verdict;
        assert_eq!(reader.raw(), &data[..fed]);
    }
});
