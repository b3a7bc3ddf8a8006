//! Keep-alive connections to HTTP upstreams, kept per upstream (its address, and for TLS
//! the name it was verified for): a request takes an idle connection (or opens one) and
//! gives it back once its response was read to the end.

use rustc_hash::FxHashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::upstream::Pooled;
use crate::conn::Conn;

/// Idle connections kept per upstream; more are closed when given back.
const MAX_IDLE_PER_ADDR: usize = 256;
/// How often expired idle connections are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Idle upstream connections of stream type `S`, by upstream `K`.
pub(crate) struct Pool<K, S> {
    idle: Mutex<Idle<K, S>>,
    /// An idle connection unused this long is closed.
    idle_timeout: Duration,
}

struct Idle<K, S> {
    by_addr: FxHashMap<K, Vec<(Pooled<S>, Instant)>>,
    /// When expired connections were last closed.
    swept: Instant,
}

impl<K: Hash + Eq + Send + 'static, S: Conn> Pool<K, S> {
    /// An empty pool whose idle connections close after `idle_timeout`.
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Idle {
                by_addr: FxHashMap::default(),
                swept: Instant::now(),
            }),
            idle_timeout,
        }
    }

    /// The most recently used idle connection to `addr` that still looks open.
    pub(crate) fn take(&self, addr: &K) -> Option<Pooled<S>> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.by_addr.get_mut(addr)?;
        while let Some((conn, since)) = conns.pop() {
            if since.elapsed() < self.idle_timeout && still_open(conn.stream.socket()) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `addr` (its last response was read to the end
    /// and nothing more came).
    pub(crate) fn put_back(&self, addr: K, conn: Pooled<S>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(idle.swept) >= SWEEP_EVERY {
            self.sweep(&mut idle, now);
        }
        let conns = idle.by_addr.entry(addr).or_default();
        if conns.len() < MAX_IDLE_PER_ADDR {
            conns.push((conn, now));
        }
    }

    /// Closes idle connections past the idle timeout (or closed by the upstream) every
    /// [`SWEEP_EVERY`], also while no requests come; ends when the pool is gone.
    pub(crate) fn reap(pool: &Arc<Self>) {
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

    fn sweep(&self, idle: &mut Idle<K, S>, now: Instant) {
        idle.swept = now;
        let timeout = self.idle_timeout;
        idle.by_addr.retain(|_, conns| {
            conns.retain(|(c, since)| {
                now.duration_since(*since) < timeout && still_open(c.stream.socket())
            });
            !conns.is_empty()
        });
    }
}

/// False when the upstream closed an idle connection or sent something unasked (for TLS,
/// a close alert or any record: either way the connection is not reused, so the byte read
/// is not missed). The check reads only when the socket was reported readable, so an open,
/// quiet connection costs no system call. A close that races with reuse is caught by the
/// caller's retry.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use std::net::SocketAddr;

    fn idle(stream: TcpStream) -> Pooled<TcpStream> {
        Pooled {
            stream,
            buf: bytes::BytesMut::new(),
        }
    }

    /// A connection to a listener on loopback, and the accepted other end.
    async fn pair() -> (SocketAddr, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (addr, a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn an_idle_connection_is_reused_until_the_upstream_closes_it() {
        let pool = Pool::new(Duration::from_secs(60));
        let (addr, conn, mut server) = pair().await;
        pool.put_back(addr, idle(conn));
        let conn = pool.take(&addr).expect("the idle connection");
        pool.put_back(addr, conn);
        server.shutdown().await.unwrap();
        drop(server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            pool.take(&addr).is_none(),
            "a closed connection is not handed out"
        );
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed_without_traffic() {
        let pool: Arc<Pool<SocketAddr, TcpStream>> =
            Arc::new(Pool::new(Duration::from_millis(100)));
        Pool::reap(&pool);
        let (addr, conn, _server) = pair().await;
        pool.put_back(addr, idle(conn));
        assert_eq!(pool.idle.lock().unwrap().by_addr.len(), 1);
        tokio::time::sleep(SWEEP_EVERY * 2 + Duration::from_millis(200)).await;
        assert!(pool.idle.lock().unwrap().by_addr.is_empty());
    }
}
