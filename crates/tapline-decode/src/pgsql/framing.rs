//! Framing for the proxy's message-by-message relay: how a side's next bytes split into whole
//! messages (asked before they are fed, so each can be judged before it is forwarded), the
//! wire name of a whole message, and feeding one with or without its fields.

use tapline_core::{EventKind, Side, Timestamp};

use super::{
    backend, be32, frontend, known_tag, untyped_code, PgDecoder, State, MAX_MESSAGE, MAX_SANE,
    MAX_STARTUP,
};

/// How the next bytes of one side split into messages (see [`PgDecoder::frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The first `n` bytes are one whole message.
    Whole(usize),
    /// The next message is not complete yet.
    NeedMore,
    /// Not framed messages: feed the bytes as they come.
    Raw,
}

impl PgDecoder {
    /// How the next bytes of `side` in `buf` (not yet fed) split: one whole message to feed
    /// on its own, more bytes needed, or bytes that are not framed messages (encrypted,
    /// resynchronising, an over-long message, or a message begun in an earlier feed), to be
    /// fed as they come. The proxy frames a session this way to take verdicts on each
    /// message before forwarding it.
    pub fn frame(&self, side: Side, buf: &[u8]) -> Frame {
        let stream = match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        };
        if !stream.buf.is_empty() {
            return Frame::Raw;
        }
        let whole = |len: usize| {
            if buf.len() >= len {
                Frame::Whole(len)
            } else {
                Frame::NeedMore
            }
        };
        match stream.state {
            State::Opaque | State::Skip(_) | State::Resync => Frame::Raw,
            State::EncryptionAnswer => whole(1),
            State::Startup if buf.len() < 8 => Frame::NeedMore,
            State::Startup
                if (8..=MAX_STARTUP).contains(&be32(buf))
                    && untyped_code(be32(&buf[4..])).is_some() =>
            {
                whole(be32(buf) as usize)
            }
            State::Startup | State::Typed => {
                if buf.len() < 5 {
                    return Frame::NeedMore;
                }
                let len = be32(&buf[1..]);
                let total = len as usize + 1;
                if !(4..=MAX_SANE).contains(&len) || !known_tag(side, buf[0]) || total > MAX_MESSAGE
                {
                    Frame::Raw
                } else {
                    whole(total)
                }
            }
        }
    }

    /// The wire name of the whole message `msg` that [`PgDecoder::frame`] gave for `side`
    /// (`Query`, `DataRow`, `StartupMessage`, …; `Authentication` for any of its kinds).
    pub fn message_type(&self, side: Side, msg: &[u8]) -> &'static str {
        match (side, self.client.state) {
            (Side::Client, State::Startup) if msg.len() >= 8 => {
                untyped_code(be32(&msg[4..])).unwrap_or("StartupMessage")
            }
            (Side::Client, _) => msg.first().map_or("", |t| frontend::tag_name(*t)),
            (Side::Server, State::EncryptionAnswer) => "EncryptionResponse",
            (Side::Server, _) => msg.first().map_or("", |t| backend::tag_name(*t)),
        }
    }

    /// Feeds one whole message, building its fields (and keeping its bytes) only when
    /// `fields` (whatever this decoder's own setting).
    pub fn feed_message(
        &mut self,
        side: Side,
        ts: Timestamp,
        msg: &[u8],
        fields: bool,
        out: &mut Vec<EventKind>,
    ) {
        let own = std::mem::replace(&mut self.fields, fields);
        self.feed(side, ts, msg, out);
        self.fields = own;
    }
}
