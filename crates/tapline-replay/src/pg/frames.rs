//! The server's side of a replayed session split into messages (tag and body), so the
//! session knows when the server is ready again and what its start-up answers say. (The
//! decoder reads the same bytes for the events; this only frames.)

use bytes::{Buf, BytesMut};

/// Server bytes not yet framed.
#[derive(Default)]
pub(crate) struct Frames {
    buf: BytesMut,
}

impl Frames {
    /// Adds bytes read from the server.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message: its tag and body.
    pub fn next(&mut self) -> Option<(u8, BytesMut)> {
        let header = self.buf.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if self.buf.len() < len.max(4) + 1 {
            return None;
        }
        let tag = self.buf[0];
        self.buf.advance(5);
        Some((tag, self.buf.split_to(len.max(4) - 4)))
    }

    /// Counts the whole `ReadyForQuery` messages in what was pushed, dropping the rest.
    pub fn count_ready(&mut self) -> usize {
        let mut ready = 0;
        while let Some((tag, _)) = self.next() {
            ready += usize::from(tag == b'Z');
        }
        ready
    }
}

/// An `ErrorResponse` body as one line: `message (SQLSTATE code)`.
pub(crate) fn error_text(body: &[u8]) -> String {
    let mut message = String::new();
    let mut code = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'M', text)) => message = String::from_utf8_lossy(text).into_owned(),
            Some((b'C', text)) => code = String::from_utf8_lossy(text).into_owned(),
            _ => {}
        }
    }
    format!("{message} (SQLSTATE {code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads() {
        let mut f = Frames::default();
        f.push(b"Z\0\0\0\x05I1\0\0");
        assert_eq!(
            f.next().map(|(t, b)| (t, b.to_vec())),
            Some((b'Z', b"I".to_vec()))
        );
        assert!(f.next().is_none());
        f.push(b"\0\x04Z\0\0\0\x05T");
        assert_eq!(f.count_ready(), 1, "a ParseComplete, then ReadyForQuery");
        assert_eq!(
            error_text(b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"),
            "password authentication failed (SQLSTATE 28P01)"
        );
    }
}
