//! The bytes of a client connection's exchanges: both connections, read into the machine's
//! input buffers and written from its output queues in one poll (so a request body uploads
//! while the response head is awaited), with the timeouts of each wait and the byte counts
//! of the client connection. Generic over both byte streams.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tapline_core::{Chunk, FlowStats, Side};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::exchange::{Exchange, Timer, Wait};
use crate::stop::{Phase, StopSignal};

/// Room a read gets at least: enough for most heads and small bodies, so that connections
/// that carry only those keep little memory.
const MIN_READ: usize = 8 * 1024;
/// Room a read gets at most: a connection whose reads fill their room (a bulk body) grows
/// its buffer up to this, for fewer and larger system calls.
const MAX_READ: usize = 64 * 1024;
/// The stack buffer a keep-alive client's next request is first read into (most request
/// heads fit; a longer one is read on into the request's own buffer).
const IDLE_PROBE: usize = 4 * 1024;
/// Most queued pieces written in one vectored write.
const MAX_SLICES: usize = 16;

/// What ended a wait.
pub(super) enum Happened {
    /// Bytes were read (or everything queued was written).
    Progress,
    /// The client's stream ended (`None`) or failed.
    ClientEnd(Option<String>),
    /// The upstream's stream ended (`None`) or failed.
    UpstreamEnd(Option<String>),
    /// The client sent nothing within its timeout.
    ClientQuiet,
    /// The upstream sent nothing within the idle timeout.
    UpstreamQuiet,
    /// The run drains while the connection is between requests.
    Drained,
}

/// Bytes and calls one way on the client connection.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    bytes: u64,
    calls: u64,
}

impl Count {
    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        self.calls += 1;
    }
}

/// Both connections of a client connection's exchanges.
pub(super) struct Sides<C, U> {
    /// The client connection.
    pub(super) client: C,
    /// The current exchange's upstream connection, and its address.
    pub(super) upstream: Option<(SocketAddr, U)>,
    read: Count,
    written: Count,
    client_timer: Pin<Box<Sleep>>,
    upstream_timer: Pin<Box<Sleep>>,
    /// A head's deadline, from its first byte.
    head_deadline: Option<Instant>,
    /// Resolves once the run drains (then `drained` is set: it is not polled again).
    draining: Pin<Box<dyn Future<Output = ()> + Send>>,
    drained: bool,
    /// Upstream-leg bytes that went by, kept for `on_data` hooks when asked to.
    pub(super) seen: Vec<Chunk>,
    /// Bytes were written to the client or the upstream since their last flush (TLS
    /// holds them in its records until then; TCP flushes for free).
    client_unflushed: bool,
    upstream_unflushed: bool,
}

impl<C, U> Sides<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// The client connection `client`, with no upstream yet.
    pub(super) fn new(client: C, stop: StopSignal) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400);
        Sides {
            client,
            upstream: None,
            read: Count::default(),
            written: Count::default(),
            client_timer: Box::pin(tokio::time::sleep_until(far)),
            upstream_timer: Box::pin(tokio::time::sleep_until(far)),
            head_deadline: None,
            draining: Box::pin(async move { stop.reached(Phase::Draining).await }),
            drained: false,
            seen: Vec::new(),
            client_unflushed: false,
            upstream_unflushed: false,
        }
    }

    /// Counts `n` bytes of the client's that were read before the connection came here.
    pub(super) fn already_read(&mut self, n: usize) {
        self.read.add(n);
    }

    /// The client connection's totals: what the client sent, what the proxy wrote to it.
    pub(super) fn totals(&self) -> FlowStats {
        FlowStats {
            bytes_from_client: self.read.bytes,
            bytes_from_server: self.written.bytes,
            packets_from_client: self.read.calls,
            packets_from_server: self.written.calls,
        }
    }

    /// A head's deadline no longer applies (the machine is past it).
    pub(super) fn head_done(&mut self) {
        self.head_deadline = None;
    }

    /// Writes what `machine` queued and reads what it wants, until something happens that
    /// it must take in; upstream-leg bytes go to [`Sides::seen`] when `observing`.
    pub(super) async fn wait(
        &mut self,
        machine: &mut Exchange,
        wait: Wait,
        idle: Duration,
        observing: bool,
    ) -> Happened {
        let now = Instant::now();
        if let Some(timer) = wait.client {
            let deadline = match timer {
                Timer::Head => *self.head_deadline.get_or_insert(now + idle),
                _ => now + idle,
            };
            self.client_timer.as_mut().reset(deadline);
        }
        if wait.upstream {
            self.upstream_timer.as_mut().reset(now + idle);
        }
        poll_fn(|cx| self.poll(cx, machine, wait, observing)).await
    }

    /// Writes what is queued for the client (best effort: the connection is ending or
    /// changing hands).
    pub(super) async fn flush(&mut self, machine: &mut Exchange) {
        let queue = machine.client_output();
        let _ = poll_fn(|cx| loop {
            if queue.is_empty() {
                return Pin::new(&mut self.client).poll_flush(cx);
            }
            match write_some(Pin::new(&mut self.client), cx, queue) {
                Poll::Ready(Ok(n)) => self.written.add(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        self.client_unflushed = false;
    }

    /// Writes what is queued for the client and closes its connection (for TLS, with a
    /// close alert, so a response that ends with the connection is seen whole).
    pub(super) async fn close(&mut self, machine: &mut Exchange) {
        self.flush(machine).await;
        let _ = poll_fn(|cx| Pin::new(&mut self.client).poll_shutdown(cx)).await;
    }

    /// One round of a wait: writes both queues as far as they go, then reads the sides
    /// wanted (not a side whose bytes would pile up: the client while the upstream has not
    /// taken what is queued for it, and the other way round).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        machine: &mut Exchange,
        wait: Wait,
        observing: bool,
    ) -> Poll<Happened> {
        while !machine.client_output().is_empty() {
            match write_some(Pin::new(&mut self.client), cx, machine.client_output()) {
                Poll::Ready(Ok(n)) => {
                    self.written.add(n);
                    self.client_unflushed = true;
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Happened::ClientEnd(Some(e.to_string())))
                }
                Poll::Pending => break,
            }
        }
        if self.client_unflushed {
            match Pin::new(&mut self.client).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.client_unflushed = false,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Happened::ClientEnd(Some(e.to_string())))
                }
                Poll::Pending => {}
            }
        }
        if let Some((_, up)) = self.upstream.as_mut() {
            let queue = machine.upstream_output();
            while !queue.is_empty() {
                let pending: Vec<Bytes> = if observing {
                    queue.iter().take(MAX_SLICES).cloned().collect()
                } else {
                    Vec::new()
                };
                match write_some(Pin::new(&mut *up), cx, queue) {
                    Poll::Ready(Ok(mut n)) => {
                        self.upstream_unflushed = true;
                        for piece in pending {
                            if n == 0 {
                                break;
                            }
                            let data = piece.slice(..n.min(piece.len()));
                            n -= data.len();
                            self.seen.push(Chunk {
                                from: Side::Client,
                                data,
                            });
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Happened::UpstreamEnd(Some(format!("writing: {e}"))))
                    }
                    Poll::Pending => break,
                }
            }
            if self.upstream_unflushed {
                match Pin::new(&mut *up).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.upstream_unflushed = false,
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Happened::UpstreamEnd(Some(format!("writing: {e}"))))
                    }
                    Poll::Pending => {}
                }
            }
        }
        let upstream_busy = !machine.upstream_output().is_empty();
        let client_busy = !machine.client_output().is_empty();
        if wait.client.is_some() && !upstream_busy {
            let between = wait.client == Some(Timer::Idle) && machine.client_in.is_empty();
            let read = if between {
                read_idle(Pin::new(&mut self.client), cx, &mut machine.client_in)
            } else {
                read(Pin::new(&mut self.client), cx, &mut machine.client_in)
            };
            match read {
                Poll::Ready(Ok(0)) => return Poll::Ready(Happened::ClientEnd(None)),
                Poll::Ready(Ok(n)) => {
                    self.read.add(n);
                    return Poll::Ready(Happened::Progress);
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Happened::ClientEnd(Some(e.to_string())))
                }
                Poll::Pending => {}
            }
            if self.client_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Happened::ClientQuiet);
            }
            if wait.client == Some(Timer::Idle)
                && !self.drained
                && self.draining.as_mut().poll(cx).is_ready()
            {
                self.drained = true;
                return Poll::Ready(Happened::Drained);
            }
        }
        if let (true, false, Some((_, up))) = (wait.upstream, client_busy, self.upstream.as_mut()) {
            let before = machine.upstream_in.len();
            match read(Pin::new(up), cx, &mut machine.upstream_in) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Happened::UpstreamEnd(None)),
                Poll::Ready(Ok(_)) => {
                    if observing {
                        let data = Bytes::copy_from_slice(&machine.upstream_in[before..]);
                        self.seen.push(Chunk {
                            from: Side::Server,
                            data,
                        });
                    }
                    return Poll::Ready(Happened::Progress);
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Happened::UpstreamEnd(Some(format!("reading: {e}"))))
                }
                Poll::Pending => {}
            }
            if self.upstream_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Happened::UpstreamQuiet);
            }
        }
        let writes_done = machine.client_output().is_empty()
            && machine.upstream_output().is_empty()
            && !self.client_unflushed
            && !self.upstream_unflushed;
        if writes_done && wait.client.is_none() && !wait.upstream {
            return Poll::Ready(Happened::Progress);
        }
        Poll::Pending
    }
}

/// Reads the first bytes of a keep-alive client's next request into `buf` (empty): while
/// the client is idle no buffer is held (the one of the last request is given back) and a
/// small stack buffer waits for the bytes, which are then copied into a new one.
fn read_idle<R: AsyncRead + ?Sized>(
    from: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
    let mut probe = [0u8; IDLE_PROBE];
    let mut got = ReadBuf::new(&mut probe);
    std::task::ready!(from.poll_read(cx, &mut got))?;
    let n = got.filled().len();
    if n > 0 {
        buf.reserve(MIN_READ.max(n));
        buf.extend_from_slice(got.filled());
    }
    Poll::Ready(Ok(n))
}

/// Reads into `buf`, giving it room first (growing for reads that fill it).
fn read<R: AsyncRead + ?Sized>(
    from: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    // Reserving on an emptied buffer reuses its memory (nothing else holds views of it by
    // the time it is read into again).
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(MIN_READ);
    }
    let room = buf.capacity() - buf.len();
    let read = tokio_util::io::poll_read_buf(from, cx, buf);
    if let Poll::Ready(Ok(n)) = read {
        if n == room && room < MAX_READ {
            buf.reserve((room * 2).min(MAX_READ));
        }
    }
    read
}

/// Writes from the front of `queue` (several pieces at once when the stream takes vectored
/// writes), dropping what went out.
fn write_some<W: AsyncWrite + ?Sized>(
    mut to: Pin<&mut W>,
    cx: &mut Context<'_>,
    queue: &mut VecDeque<Bytes>,
) -> Poll<std::io::Result<usize>> {
    let n = if to.is_write_vectored() && queue.len() > 1 {
        let slices: Vec<IoSlice<'_>> = queue
            .iter()
            .take(MAX_SLICES)
            .map(|b| IoSlice::new(b))
            .collect();
        std::task::ready!(to.as_mut().poll_write_vectored(cx, &slices))?
    } else {
        let Some(front) = queue.front() else {
            return Poll::Ready(Ok(0));
        };
        std::task::ready!(to.as_mut().poll_write(cx, front))?
    };
    if n == 0 {
        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
    }
    let mut left = n;
    while left > 0 {
        let Some(front) = queue.front_mut() else {
            break;
        };
        if front.len() <= left {
            left -= front.len();
            queue.pop_front();
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Poll::Ready(Ok(n))
}
