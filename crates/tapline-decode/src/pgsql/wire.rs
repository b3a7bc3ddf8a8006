//! Reading the wire: big-endian fields, NUL-terminated strings and values as text, bounds
//! checked (nothing is read past a message's end or allocated from a length on the wire).

use std::borrow::Cow;

use super::MAX_VALUE;

/// A big-endian u32 from the first four bytes of `b`.
pub(super) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A DataRow value or Bind parameter as text: the string for text format (lossy UTF-8),
/// `\x`-prefixed hex for binary format, cut at [`MAX_VALUE`] bytes.
pub(crate) fn value_text(v: &[u8], format: i16) -> String {
    let v = &v[..v.len().min(MAX_VALUE)];
    if format == 0 {
        if let Cow::Borrowed(s) = String::from_utf8_lossy(v) {
            return s.to_string();
        }
    }
    let mut s = String::with_capacity(2 + 2 * v.len());
    s.push_str("\\x");
    for b in v {
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    s
}

/// A bounds-checked big-endian reader over one message body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What is left unread.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i16(&mut self) -> Option<i16> {
        Some(self.u16()? as i16)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(be32)
    }

    pub fn i32(&mut self) -> Option<i32> {
        Some(self.u32()? as i32)
    }

    /// A NUL-terminated string (lossy UTF-8).
    pub fn cstr(&mut self) -> Option<Cow<'a, str>> {
        let end = memchr::memchr(0, self.buf)?;
        let s = self.bytes(end)?;
        self.buf = &self.buf[1..];
        Some(String::from_utf8_lossy(s))
    }
}
