//! Raw byte relays between two connections (CONNECT tunnels, tcp/psql mappings, HTTP
//! connections after a protocol switch, intercepted TLS that is not HTTP): two pumps, one
//! per direction, over plain TCP or TLS legs (whose bytes are the decrypted ones).
//!
//! Each read goes through the flow's dispatch (chunk hooks when a stage wants chunks: pass,
//! replace, hold, close; the sink when it wants chunks), then, once forwarded, to the flow's
//! decoder (PostgreSQL messages, sniffed protocols) in the same task: its events are observed
//! (the bytes went on before they were decoded: verdicts on them are counted, not applied),
//! and a pump reads again once they are delivered, so a slow observer slows its own flow. When
//! nobody needs the bytes and both legs are plain TCP, a pump becomes a `splice(2)` loop
//! that never copies them into the process (a copy loop if no pipe can be had).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tapline_core::{
    Chunk, ChunkVerdict, Dispatch, EventKind, FlowEnd, FlowStats, Protocol, Side, Timestamp,
    Verdicts,
};
use tapline_decode::FlowDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{tcp, TcpStream};
use tokio::sync::Mutex;

use crate::conn::Conn;
use crate::context::Shared;
use crate::pg_relay::relay_messages;
use crate::splice;
use crate::stop::Phase;

/// Bytes read per call at first; a flow that fills its buffer gets a bigger one, up to
/// [`MAX_BUF`], so bulk transfers make few, large writes (fewer wake-ups of the receiver).
/// Idle TCP connections hold no buffer at all.
const BUF_SIZE: usize = 16 * 1024;
/// Largest read buffer of one direction.
const MAX_BUF: usize = 1024 * 1024;

/// Relays between `client` and `server` until both sides close, one fails, a plugin closes
/// the flow, it idles out or the run is forced to stop. `first` is a chunk already read.
/// With a `decoder`, forwarded bytes feed it (until it turns opaque) and its events go to the
/// pipeline. Once nobody needs to see a direction's bytes, they move between the sockets
/// inside the kernel (`splice(2)` through a pipe). A PostgreSQL flow whose stages take
/// verdicts on messages is relayed message by message instead (see `pg_relay`).
pub(crate) async fn relay<C: Conn, S: Conn>(
    ctx: &Shared,
    dispatch: &Dispatch,
    client: &mut C,
    server: &mut S,
    first: Option<Chunk>,
    decoder: Option<FlowDecoder>,
) -> (FlowStats, FlowEnd) {
    if let Some(reason) = dispatch.close_requested() {
        return (
            FlowStats::default(),
            FlowEnd::ClosedByPlugin(reason.to_string()),
        );
    }
    let judged = dispatch.interest().messages && dispatch.verdicts() == Verdicts::Apply;
    let decoder = match decoder {
        Some(d) if judged && d.protocol() == Protocol::Postgres => {
            return Box::pin(relay_messages(ctx, dispatch, client, server, first, d)).await
        }
        other => other,
    };
    let tap = Tap {
        dispatch,
        hooked: dispatch.wants_chunks(),
        decoding: AtomicBool::new(decoder.is_some()),
        decoder: decoder.map(|d| Mutex::new(Decoder::new(dispatch.observing(), d))),
    };
    let stats = Counters::default();
    let activity = Activity::new();
    let pumps = Pumps {
        tap: &tap,
        activity: &activity,
        stats: &stats,
    };
    let end = carry(ctx, &pumps, &activity, client, server, first).await;
    Box::pin(tap.finish_decoding()).await;
    (stats.snapshot(), end)
}

/// What both pumps share.
struct Pumps<'a, 'd> {
    tap: &'a Tap<'d>,
    activity: &'a Activity,
    stats: &'a Counters,
}

impl Directions for Pumps<'_, '_> {
    fn pump<R, W>(
        &self,
        from: Side,
        reader: R,
        writer: W,
        first: Option<Bytes>,
    ) -> impl Future<Output = Result<(), FlowEnd>> + Send
    where
        R: AsyncRead + Unpin + Half + Send,
        W: AsyncWrite + Unpin + Half + Send,
    {
        pump(self, from, reader, writer, first)
    }
}

/// The two directions of a relayed connection, each carried by one pump.
pub(crate) trait Directions: Sync {
    /// Carries `from`'s bytes from `reader` to `writer` (`first`, already read, before
    /// them) until EOF, then half-closes `writer`.
    fn pump<R, W>(
        &self,
        from: Side,
        reader: R,
        writer: W,
        first: Option<Bytes>,
    ) -> impl Future<Output = Result<(), FlowEnd>> + Send
    where
        R: AsyncRead + Unpin + Half + Send,
        W: AsyncWrite + Unpin + Half + Send;
}

/// Carries both directions of `client` and `server` through `dirs` (plain TCP sockets are
/// split without a lock between the halves, other streams through tokio's split) until both
/// ended, one failed, the flow idled out (`activity`) or the run is forced to stop; `first`
/// is a chunk already read.
pub(crate) async fn carry<C: Conn, S: Conn, D: Directions>(
    ctx: &Shared,
    dirs: &D,
    activity: &Activity,
    client: &mut C,
    server: &mut S,
    first: Option<Chunk>,
) -> FlowEnd {
    let (first_c, first_s) = match first {
        Some(c) if c.from == Side::Client => (Some(c.data), None),
        Some(c) => (None, Some(c.data)),
        None => (None, None),
    };
    let both = async {
        match (client.plain(), server.plain()) {
            (Some(client), Some(server)) => {
                let (cr, cw) = client.split();
                let (sr, sw) = server.split();
                tokio::try_join!(
                    dirs.pump(Side::Client, cr, sw, first_c),
                    dirs.pump(Side::Server, sr, cw, first_s)
                )
            }
            _ => {
                let (cr, cw) = tokio::io::split(client);
                let (sr, sw) = tokio::io::split(server);
                tokio::try_join!(
                    dirs.pump(Side::Client, cr, sw, first_c),
                    dirs.pump(Side::Server, sr, cw, first_s)
                )
            }
        }
    };
    tokio::select! {
        r = both => match r {
            Ok(_) => FlowEnd::Fin,
            Err(end) => end,
        },
        _ = activity.idle(ctx.limits.idle_timeout) => FlowEnd::Timeout,
        _ = ctx.stop.reached(Phase::Forced) => FlowEnd::Shutdown,
    }
}

/// One direction of a connection, which may be a TCP socket's own (then it can splice).
pub(crate) trait Half {
    /// The socket, when the half's bytes are the socket's own.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Half for tcp::ReadHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Half for tcp::WriteHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<T> Half for tokio::io::ReadHalf<T> {}
impl<T> Half for tokio::io::WriteHalf<T> {}

/// What a flow's bytes go through besides the other side.
struct Tap<'a> {
    dispatch: &'a Dispatch,
    /// A stage or the sink wants the chunks.
    hooked: bool,
    /// The decoder still wants bytes (sniffing may give up).
    decoding: AtomicBool,
    /// Fed by both pumps, after the bytes went on.
    decoder: Option<Mutex<Decoder>>,
}

impl Tap<'_> {
    /// True when nobody needs to see the bytes.
    fn fast(&self) -> bool {
        !self.hooked && !self.decoding.load(Ordering::Relaxed)
    }

    /// Runs `data` from `from` through the hooks and forwards what they decide to `to`.
    async fn forward<W: AsyncWrite + Unpin>(
        &self,
        from: Side,
        data: Bytes,
        to: &mut W,
    ) -> Result<(), FlowEnd> {
        let ts = Timestamp::now();
        let out = if self.hooked {
            let chunk = Chunk {
                from,
                data: data.clone(),
            };
            match self.dispatch.chunk(ts, chunk).await {
                ChunkVerdict::Pass => data,
                ChunkVerdict::Replace(other) => other,
                ChunkVerdict::Hold => return Ok(()),
                ChunkVerdict::Close(reason) => return Err(FlowEnd::ClosedByPlugin(reason)),
            }
        } else {
            data
        };
        if !out.is_empty() {
            write_out(to, &out).await?;
        }
        if let Some(decoder) = &self.decoder {
            if self.decoding.load(Ordering::Relaxed) && !out.is_empty() {
                let mut decoder = decoder.lock().await;
                decoder.feed(from, ts, &out).await;
                if decoder.inner.is_opaque() {
                    self.decoding.store(false, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Lets the decoder flush what is pending (a flow that ended mid-message).
    async fn finish_decoding(self) {
        if let Some(decoder) = self.decoder {
            if self.decoding.load(Ordering::Relaxed) {
                decoder.into_inner().finish().await;
            }
        }
    }
}

/// Copies `from`'s bytes until EOF, then half-closes the other side.
async fn pump<R, W>(
    pumps: &Pumps<'_, '_>,
    from: Side,
    mut reader: R,
    mut writer: W,
    first: Option<Bytes>,
) -> Result<(), FlowEnd>
where
    R: AsyncRead + Unpin + Half,
    W: AsyncWrite + Unpin + Half,
{
    let Pumps {
        tap,
        activity,
        stats,
    } = *pumps;
    if let Some(data) = first {
        stats.add(from, data.len());
        Box::pin(tap.forward(from, data, &mut writer)).await?;
    }
    let mut size = BUF_SIZE;
    // Empty while the connection is idle: a TCP half takes a buffer when bytes arrive and
    // gives it back once a read drained the socket, so idle connections hold none.
    let mut buf = BytesMut::new();
    loop {
        if let (true, Some(r), Some(w)) = (tap.fast(), reader.tcp(), writer.tcp()) {
            if let Some(pipe) = splice::Pipe::new() {
                // Boxed, as the hooks' path below: an idle connection's future stays small.
                Box::pin(pipe.relay(r, w, |n| {
                    stats.add(from, n);
                    activity.touch();
                }))
                .await
                .map_err(end_of)?;
                break;
            }
        }
        if buf.capacity() == 0 {
            if let Some(socket) = reader.tcp() {
                socket.readable().await.map_err(end_of)?;
            }
            buf.reserve(size);
        }
        let room = buf.capacity() - buf.len();
        let n = reader.read_buf(&mut buf).await.map_err(end_of)?;
        if n == 0 {
            break;
        }
        stats.add(from, n);
        activity.touch();
        let data = buf.split().freeze();
        if tap.fast() {
            write_out(&mut writer, &data).await?;
        } else {
            Box::pin(tap.forward(from, data, &mut writer)).await?;
        }
        if n == room && size < MAX_BUF {
            // A full read: bulk data, worth bigger reads.
            size *= 2;
        }
        if n < room && reader.tcp().is_some() {
            buf = BytesMut::new();
        } else if buf.capacity() < size {
            buf.reserve(size);
        }
    }
    // The peer may already be gone; the other direction reports that.
    let _ = writer.shutdown().await;
    Ok(())
}

/// Writes `data` whole and flushes it (TLS keeps written bytes in its records until then;
/// for TCP the flush is free).
pub(crate) async fn write_out<W: AsyncWrite + Unpin>(
    to: &mut W,
    data: &[u8],
) -> Result<(), FlowEnd> {
    to.write_all(data).await.map_err(end_of)?;
    to.flush().await.map_err(end_of)
}

/// Bytes read to learn who speaks first.
const FIRST_READ: usize = 16 * 1024;

/// Waits for whichever side speaks first (a tunnel or an intercepted connection whose
/// protocol is not known yet). `Ok(None)` when a side closed without a byte. Plain TCP sides
/// are waited on without a buffer: one is taken when bytes arrive.
pub(crate) async fn first_chunk<C: Conn, S: Conn>(
    ctx: &Shared,
    client: &mut C,
    server: &mut S,
) -> Result<Option<Chunk>, FlowEnd> {
    let deadline = tokio::time::Instant::now() + ctx.limits.idle_timeout;
    let (from, read) = match (client.plain(), server.plain()) {
        (Some(client), Some(server)) => loop {
            let from = tokio::select! {
                r = client.readable() => r.map(|()| Side::Client),
                r = server.readable() => r.map(|()| Side::Server),
                _ = tokio::time::sleep_until(deadline) => return Err(FlowEnd::Timeout),
                _ = ctx.stop.reached(Phase::Forced) => return Err(FlowEnd::Shutdown),
            }
            .map_err(end_of)?;
            let socket = if from == Side::Client {
                &*client
            } else {
                &*server
            };
            let mut buf = vec![0u8; FIRST_READ];
            match socket.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => break (from, read.map(|n| (buf, n))),
            }
        },
        _ => {
            let mut cbuf = vec![0u8; FIRST_READ];
            let mut sbuf = vec![0u8; FIRST_READ];
            let (from, read) = tokio::select! {
                r = client.read(&mut cbuf) => (Side::Client, r),
                r = server.read(&mut sbuf) => (Side::Server, r),
                _ = tokio::time::sleep_until(deadline) => return Err(FlowEnd::Timeout),
                _ = ctx.stop.reached(Phase::Forced) => return Err(FlowEnd::Shutdown),
            };
            let buf = if from == Side::Client { cbuf } else { sbuf };
            (from, read.map(|n| (buf, n)))
        }
    };
    match read {
        Ok((_, 0)) => Ok(None),
        Ok((buf, n)) => Ok(Some(Chunk {
            from,
            data: Bytes::copy_from_slice(&buf[..n]),
        })),
        Err(e) => Err(end_of(e)),
    }
}

/// How an I/O error ends a flow.
pub(crate) fn end_of(e: io::Error) -> FlowEnd {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FlowEnd::Rst,
        _ => FlowEnd::Error(e.to_string()),
    }
}

/// Bytes and reads each way, updated by both pumps.
#[derive(Default)]
pub(crate) struct Counters {
    bytes: [AtomicU64; 2],
    reads: [AtomicU64; 2],
}

impl Counters {
    pub(crate) fn add(&self, from: Side, n: usize) {
        let i = from as usize;
        self.bytes[i].fetch_add(n as u64, Ordering::Relaxed);
        self.reads[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FlowStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FlowStats {
            bytes_from_client: get(&self.bytes[Side::Client as usize]),
            bytes_from_server: get(&self.bytes[Side::Server as usize]),
            packets_from_client: get(&self.reads[Side::Client as usize]),
            packets_from_server: get(&self.reads[Side::Server as usize]),
        }
    }
}

/// When either side last sent something.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing was read for `idle`.
    pub(crate) async fn idle(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let deadline = self.start + Duration::from_millis(last) + idle;
            tokio::time::sleep_until(deadline.into()).await;
            if self.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// A flow's decoder and the observe-only dispatch its events go to.
struct Decoder {
    dispatch: Dispatch,
    inner: FlowDecoder,
    out: Vec<EventKind>,
}

impl Decoder {
    fn new(dispatch: Dispatch, inner: FlowDecoder) -> Decoder {
        Decoder {
            dispatch,
            inner,
            out: Vec::new(),
        }
    }

    /// Decodes forwarded bytes and delivers what they completed.
    async fn feed(&mut self, from: Side, ts: Timestamp, data: &[u8]) {
        self.inner.feed(from, ts, data, &mut self.out);
        self.deliver(ts).await;
    }

    async fn finish(mut self) {
        let ts = Timestamp::now();
        self.inner.finish(ts, &mut self.out);
        self.deliver(ts).await;
    }

    async fn deliver(&mut self, ts: Timestamp) {
        for kind in self.out.drain(..) {
            self.dispatch.decoded(ts, kind).await;
        }
    }
}
