//! Bodies as the proxy forwards them: streamed by default, buffered up to a limit when a
//! plugin reads them, and counted on the way through.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Errors a forwarded body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends, to the upstream or to the client.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of exactly these bytes.
pub(crate) fn full(data: Bytes) -> ProxyBody {
    Full::new(data)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with no bytes.
pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Any body as a [`ProxyBody`].
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body read up to a limit for the plugins, with what is still to be forwarded.
pub(crate) struct Buffered {
    /// The first `limit` bytes (or all of them).
    pub seen: Bytes,
    /// True when the body is longer than `seen`.
    pub truncated: bool,
    /// The whole body to forward: what was read, then the unread rest.
    pub forward: ProxyBody,
}

/// Reads `body` until it ends or more than `limit` bytes arrived. Trailers are dropped.
pub(crate) async fn buffer<B>(mut body: B, limit: usize) -> Result<Buffered, BoxError>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut read: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    while len <= limit {
        match body.frame().await {
            None => {
                let all = concat(&read, len);
                return Ok(Buffered {
                    seen: all.clone(),
                    truncated: false,
                    forward: full(all),
                });
            }
            Some(frame) => {
                if let Ok(data) = frame.map_err(Into::into)?.into_data() {
                    len += data.len();
                    read.push_back(data);
                }
            }
        }
    }
    let seen = concat(&read, len).slice(..limit);
    Ok(Buffered {
        seen,
        truncated: true,
        forward: Prefixed { read, rest: body }
            .map_err(Into::into)
            .boxed_unsync(),
    })
}

fn concat(parts: &VecDeque<Bytes>, len: usize) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts[0].clone(),
        _ => {
            let mut all = BytesMut::with_capacity(len);
            parts.iter().for_each(|p| all.extend_from_slice(p));
            all.freeze()
        }
    }
}

/// Bytes already read from a body, then the body's unread rest.
struct Prefixed<B> {
    read: VecDeque<Bytes>,
    rest: B,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.read.pop_front() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self.read.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

/// A body that adds the length of every data frame to a counter and runs `on_end` once,
/// when it ends or is dropped (the client went away), saying whether it was read whole.
pub(crate) struct Counted {
    inner: ProxyBody,
    count: Arc<AtomicU64>,
    on_end: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Counted {
    /// Counts `inner` into `count`.
    pub(crate) fn new(inner: ProxyBody, count: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            count,
            on_end: None,
        }
    }

    /// Runs `f` once when the body ends or is dropped; `f(true)` when it ended cleanly
    /// (every byte read, no error).
    pub(crate) fn on_end(mut self, f: impl FnOnce(bool) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn finish(&mut self, whole: bool) {
        if let Some(f) = self.on_end.take() {
            f(whole);
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A body with nothing left (no body at all, or all of it read) ended cleanly.
        let whole = self.inner.is_end_stream();
        self.finish(whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        Frames(frames.into()).boxed_unsync()
    }

    /// A body over a list of frames.
    struct Frames(VecDeque<Result<Frame<Bytes>, BoxError>>);
    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn collect(body: ProxyBody) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes()
    }

    #[test]
    fn short_bodies_are_read_whole() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = rt.block_on(buffer(chunks(&[b"ab", b"cd"]), 4)).unwrap();
        assert_eq!(&b.seen[..], b"abcd");
        assert!(!b.truncated);
        assert_eq!(&collect(b.forward)[..], b"abcd");
    }

    #[test]
    fn long_bodies_keep_a_prefix_and_forward_everything() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = rt
            .block_on(buffer(chunks(&[b"ab", b"cd", b"ef", b"gh"]), 3))
            .unwrap();
        assert_eq!(&b.seen[..], b"abc");
        assert!(b.truncated);
        assert_eq!(&collect(b.forward)[..], b"abcdefgh");
    }

    #[test]
    fn counted_bodies_count_and_report_once() {
        let count = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicU64::new(0));
        let e = ended.clone();
        let body = Counted::new(chunks(&[b"abc", b"de"]), count.clone())
            .on_end(move |whole| {
                assert!(whole);
                e.fetch_add(1, Ordering::Relaxed);
            })
            .boxed_unsync();
        assert_eq!(&collect(body)[..], b"abcde");
        assert_eq!(count.load(Ordering::Relaxed), 5);
        assert_eq!(ended.load(Ordering::Relaxed), 1);
    }
}
