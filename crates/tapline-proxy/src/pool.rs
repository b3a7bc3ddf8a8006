//! Keep-alive connections to HTTP upstreams, kept per address: a request takes an idle
//! connection (or opens one) and gives it back once its response body was read to the end.
//!
//! Built on hyper's connection-level client: no task per request to watch a connection
//! become idle again, no absolute-form URIs to key a pool on, one short lock per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::Counted;
use crate::errors::UpstreamError;

/// Idle connections kept per upstream address; more are closed when given back.
const MAX_IDLE_PER_ADDR: usize = 256;
/// How often expired idle connections are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Idle upstream connections by address.
pub(crate) struct Pool {
    idle: Mutex<Idle>,
    builder: http1::Builder,
    /// An idle connection unused this long is closed.
    idle_timeout: Duration,
}

struct Idle {
    by_addr: HashMap<SocketAddr, Vec<(SendRequest<Counted>, Instant)>>,
    /// When expired connections were last closed.
    swept: Instant,
}

/// A connection in use by one request; give it back with [`Pool::put_back`] once the
/// response body ended.
pub(crate) struct PooledConn {
    sender: SendRequest<Counted>,
    addr: SocketAddr,
}

impl Pool {
    /// An empty pool; `builder` configures new connections.
    pub(crate) fn new(builder: http1::Builder, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Idle {
                by_addr: HashMap::new(),
                swept: Instant::now(),
            }),
            builder,
            idle_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` on an idle connection, or on a
    /// new one from `connect`. A reused connection that closed before the request went out
    /// is dropped and the request tried on the next one.
    pub(crate) async fn send<F, Fut>(
        &self,
        addr: SocketAddr,
        mut req: Request<Counted>,
        connect: F,
    ) -> Result<(Response<Incoming>, PooledConn), UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<TcpStream, UpstreamError>>,
    {
        loop {
            let (mut sender, reused) = match self.take_ready(addr).await {
                Some(sender) => (sender, true),
                None => (self.open(addr, connect().await?).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, PooledConn { sender, addr })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::from_client(&addr.to_string(), e.error())),
                },
            }
        }
    }

    /// Keeps `conn` for the next request to its address (the response it carried was read
    /// to the end).
    pub(crate) fn put_back(&self, conn: PooledConn) {
        if conn.sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(idle.swept) >= SWEEP_EVERY {
            self.sweep(&mut idle, now);
        }
        let conns = idle.by_addr.entry(conn.addr).or_default();
        if conns.len() < MAX_IDLE_PER_ADDR {
            conns.push((conn.sender, now));
        }
    }

    /// Closes idle connections past the idle timeout (and forgets closed ones) every
    /// [`SWEEP_EVERY`], also while no requests come; ends when the pool is gone.
    pub(crate) fn reap(pool: &Arc<Pool>) {
        let pool = Arc::downgrade(pool);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(live) = pool.upgrade() else {
                    return;
                };
                if let Ok(mut idle) = live.idle.lock() {
                    live.sweep(&mut idle, Instant::now());
                };
            }
        });
    }

    fn sweep(&self, idle: &mut Idle, now: Instant) {
        idle.swept = now;
        let timeout = self.idle_timeout;
        idle.by_addr.retain(|_, conns| {
            conns.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < timeout);
            !conns.is_empty()
        });
    }

    /// The most recently used idle connection to `addr` that is still open, once it can
    /// take a request.
    async fn take_ready(&self, addr: SocketAddr) -> Option<SendRequest<Counted>> {
        loop {
            let mut sender = self.take(addr)?;
            // It may still be finishing the previous response; a closed one errs.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Counted>> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.by_addr.get_mut(&addr)?;
        while let Some((sender, since)) = conns.pop() {
            if !sender.is_closed() && since.elapsed() < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Starts HTTP/1 on a new connection; its I/O runs on a task of its own.
    async fn open(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
    ) -> Result<SendRequest<Counted>, UpstreamError> {
        let (sender, conn) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::from_client(&addr.to_string(), &e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection to {addr}: {e}");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::net::TcpListener;

    use crate::body;

    /// An HTTP/1 origin on loopback answering `ok`; counts accepted connections.
    async fn origin(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// One GET through the pool, body read whole, connection given back.
    async fn get(pool: &Pool, addr: SocketAddr) -> Bytes {
        let req = Request::builder()
            .uri("/")
            .header("host", "origin.test")
            .body(Counted::new(body::empty(), Arc::new(AtomicU64::new(0))))
            .unwrap();
        let connect = || async move {
            TcpStream::connect(addr)
                .await
                .map_err(|e| UpstreamError::from_io(&addr.to_string(), &e))
        };
        let (resp, conn) = pool.send(addr, req, connect).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        pool.put_back(conn);
        bytes
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_carries_the_next_request() {
        let (addr, accepted) = origin(true).await;
        let pool = Pool::new(http1::Builder::new(), Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(&get(&pool, addr).await[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (addr, accepted) = origin(false).await;
        let pool = Pool::new(http1::Builder::new(), Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(&get(&pool, addr).await[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed_without_traffic() {
        let (addr, _) = origin(true).await;
        let pool = Arc::new(Pool::new(http1::Builder::new(), Duration::from_millis(100)));
        Pool::reap(&pool);
        get(&pool, addr).await;
        assert_eq!(pool.idle.lock().unwrap().by_addr.len(), 1);
        tokio::time::sleep(SWEEP_EVERY * 2 + Duration::from_millis(200)).await;
        assert!(pool.idle.lock().unwrap().by_addr.is_empty());
    }
}
