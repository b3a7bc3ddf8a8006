//! A connection wrapper that counts bytes and reads each way, for the totals of HTTP flows
//! (hyper owns those connections, so the proxy counts beneath it).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tapline_core::FlowStats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes and reads from the client, bytes and writes to it.
#[derive(Debug, Default)]
pub(crate) struct IoCounts {
    read_bytes: AtomicU64,
    reads: AtomicU64,
    written_bytes: AtomicU64,
    writes: AtomicU64,
}

impl IoCounts {
    /// The totals so far, as flow stats (what the server sent = what was written to the client).
    pub(crate) fn snapshot(&self) -> FlowStats {
        FlowStats {
            bytes_from_client: self.read_bytes.load(Ordering::Relaxed),
            bytes_from_server: self.written_bytes.load(Ordering::Relaxed),
            packets_from_client: self.reads.load(Ordering::Relaxed),
            packets_from_server: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// The totals between two snapshots.
pub(crate) fn since(now: FlowStats, base: FlowStats) -> FlowStats {
    FlowStats {
        bytes_from_client: now.bytes_from_client - base.bytes_from_client,
        bytes_from_server: now.bytes_from_server - base.bytes_from_server,
        packets_from_client: now.packets_from_client - base.packets_from_client,
        packets_from_server: now.packets_from_server - base.packets_from_server,
    }
}

/// `T`, counting into shared [`IoCounts`].
pub(crate) struct CountedIo<T> {
    inner: T,
    counts: std::sync::Arc<IoCounts>,
}

impl<T> CountedIo<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T, counts: std::sync::Arc<IoCounts>) -> Self {
        CountedIo { inner, counts }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counts
                .read_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> CountedIo<T> {
    fn count_write(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            self.counts
                .written_bytes
                .fetch_add(*n as u64, Ordering::Relaxed);
            self.counts.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}
