//! Reading and moving bytes on the proxy's HTTP connections: buffered reads with a stall
//! timeout, bodies pumped from one socket to the other in their own framing, bodies read
//! into memory for plugins, and the byte counts of the client connection.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::framing::{BodyReader, FramingError};

/// Room a read gets at least: enough for most heads and small bodies, so that connections
/// that carry only those keep little memory.
const MIN_READ: usize = 8 * 1024;
/// Room a read gets at most: a connection whose reads fill their room (a bulk body) grows
/// its buffer up to this, for fewer and larger system calls.
const MAX_READ: usize = 64 * 1024;

/// Bytes and calls one way on a connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Io {
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// Reads or writes that moved them.
    pub(crate) calls: u64,
}

impl Io {
    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        self.calls += 1;
    }
}

/// Why moving a body stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    /// The sending side failed, or closed mid-body.
    #[error("reading: {0}")]
    Read(io::Error),
    /// The receiving side failed.
    #[error("writing: {0}")]
    Write(io::Error),
    /// The sending side sent nothing for the idle timeout.
    #[error("no data for {0:?}")]
    Stalled(Duration),
    /// The body's framing is broken.
    #[error("{0}")]
    Framing(#[from] FramingError),
}

/// Reads more of `from` into `buf` within `idle`; `Ok(0)` at end of stream.
pub(crate) async fn read_more<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
    counted: &mut Io,
) -> Result<usize, PumpError> {
    // Reserving on an emptied buffer reuses its memory (the proxy never keeps views of it).
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(MIN_READ);
    }
    let room = buf.capacity() - buf.len();
    match tokio::time::timeout(idle, from.read_buf(buf)).await {
        Err(_) => Err(PumpError::Stalled(idle)),
        Ok(Err(e)) => Err(PumpError::Read(e)),
        Ok(Ok(n)) => {
            if n > 0 {
                counted.add(n);
            }
            if n == room && room < MAX_READ {
                buf.reserve((room * 2).min(MAX_READ));
            }
            Ok(n)
        }
    }
}

/// Writes all of `data` to `to`.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    to: &mut W,
    data: &[u8],
    counted: &mut Io,
) -> Result<(), PumpError> {
    to.write_all(data).await.map_err(PumpError::Write)?;
    counted.add(data.len());
    Ok(())
}

/// The side a body comes from: its socket, what was read from it and not used yet, what the
/// reads are counted into, and how long it may keep the reader waiting.
pub(crate) struct Source<'a, R> {
    /// The sending side.
    pub(crate) from: &'a mut R,
    /// What was read from it and not used yet.
    pub(crate) buf: &'a mut BytesMut,
    /// Counts reads from `from`.
    pub(crate) read: &'a mut Io,
    /// Longest wait for the sender.
    pub(crate) idle: Duration,
}

impl<R: AsyncRead + Unpin> Source<'_, R> {
    /// Moves the rest of `body` to `to` (writes counted into `written`), as framed; with
    /// `decode`, only its payload (a chunked body for a client that cannot take chunks).
    /// Ends when the body does.
    pub(crate) async fn pump<W: AsyncWrite + Unpin>(
        &mut self,
        body: &mut BodyReader,
        to: &mut W,
        written: &mut Io,
        decode: bool,
    ) -> Result<(), PumpError> {
        let mut payload = Vec::new();
        while !body.is_done() {
            if self.buf.is_empty() && self.fill(body).await? == 0 {
                break;
            }
            let n = if decode {
                payload.clear();
                body.take(self.buf, Some(&mut payload))?
            } else {
                body.take(self.buf, None)?
            };
            let out = if decode { &payload[..] } else { &self.buf[..n] };
            if !out.is_empty() {
                write(to, out, written).await?;
            }
            self.buf.advance(n);
        }
        Ok(())
    }

    /// Reads more; at end of stream, tells `body` (fine for until-close bodies, an error
    /// otherwise) and returns 0.
    async fn fill(&mut self, body: &mut BodyReader) -> Result<usize, PumpError> {
        let n = read_more(self.from, self.buf, self.idle, self.read).await?;
        if n == 0 {
            body.eof()?;
        }
        Ok(n)
    }

    /// Reads `body` into memory for the plugins until it ends or its payload passes `limit`
    /// (the rest stays unread).
    pub(crate) async fn buffer(
        &mut self,
        body: &mut BodyReader,
        limit: usize,
    ) -> Result<Buffered, PumpError> {
        let mut got = Buffered::default();
        while !body.is_done() && got.payload.len() <= limit {
            if self.buf.is_empty() && self.fill(body).await? == 0 {
                break;
            }
            let n = body.take(self.buf, Some(&mut got.payload))?;
            got.framed.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
        }
        got.complete = body.is_done();
        Ok(got)
    }
}

/// A body read into memory for the plugins.
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    /// The bytes as framed on the wire (what is forwarded when nobody changed the body).
    pub(crate) framed: Vec<u8>,
    /// The payload read (chunked bodies decoded); may pass the limit by one read.
    pub(crate) payload: Vec<u8>,
    /// True when the whole body was read.
    pub(crate) complete: bool,
}
