//! The background sender of one syslog target: batches from the queue, UDP datagrams or
//! octet-counted TCP with reconnects and backoff.

use super::*;

/// The background sender of one target.
pub(super) struct Sender {
    pub(super) shared: Arc<Shared>,
    pub(super) target: SyslogTarget,
}

impl Sender {
    pub(super) fn run(self) {
        match self.target.transport {
            Transport::Udp => self.run_udp(),
            Transport::Tcp => self.run_tcp(),
        }
    }

    /// Waits until a message is queued.
    fn wait_for_messages(&self) {
        let mut queue = self.shared.queue.lock();
        while queue.is_empty() {
            self.shared.changed.wait(&mut queue);
        }
    }

    /// Removes `n` sent messages from the front of the queue.
    fn done(&self, n: usize, sent: bool) {
        let mut queue = self.shared.queue.lock();
        let n = n.min(queue.len());
        queue.drain(..n);
        let empty = queue.is_empty();
        drop(queue);
        let counter = if sent {
            &self.shared.counters.sent
        } else {
            &self.shared.counters.dropped
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if empty {
            self.shared.changed.notify_all();
        }
    }

    fn run_udp(self) {
        let local: SocketAddr = if self.target.addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = match UdpSocket::bind(local).and_then(|s| {
            s.connect(self.target.addr)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("syslog {}: cannot open a UDP socket: {e}", self.target.url);
                return self.discard_forever();
            }
        };
        loop {
            self.wait_for_messages();
            let message = self.shared.queue.lock().front().cloned();
            if let Some(message) = message {
                let sent = socket.send(&message).is_ok();
                self.done(1, sent);
            }
        }
    }

    /// Counts every message as dropped (the transport cannot be set up at all).
    fn discard_forever(self) {
        loop {
            self.wait_for_messages();
            let n = self.shared.queue.lock().len();
            self.done(n, false);
        }
    }

    fn run_tcp(self) {
        let mut conn: Option<TcpStream> = None;
        let mut backoff = Duration::from_millis(50);
        let mut warned = false;
        let mut frame = Vec::new();
        loop {
            self.wait_for_messages();
            if conn.as_mut().is_some_and(peer_closed) {
                conn = None;
            }
            let stream = match conn.as_mut() {
                Some(s) => s,
                None => match TcpStream::connect_timeout(&self.target.addr, Duration::from_secs(2))
                {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                        if warned {
                            tracing::info!("syslog {}: reconnected", self.target.url);
                        }
                        warned = false;
                        backoff = Duration::from_millis(50);
                        conn.insert(s)
                    }
                    Err(e) => {
                        conn = None;
                        if !warned {
                            tracing::warn!(
                                "syslog {}: cannot connect ({e}); queueing and retrying",
                                self.target.url
                            );
                            warned = true;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            frame.clear();
            let n = {
                let queue = self.shared.queue.lock();
                let n = queue.len().min(BATCH);
                for message in queue.iter().take(n) {
                    frame_octet_counted(message, &mut frame);
                }
                n
            };
            match stream.write_all(&frame) {
                Ok(()) => self.done(n, true),
                Err(e) => {
                    tracing::warn!(
                        "syslog {}: write failed ({e}); reconnecting",
                        self.target.url
                    );
                    warned = true;
                    conn = None;
                }
            }
        }
    }
}

/// True when the server closed its end (a syslog server never sends, so a readable socket
/// means EOF or an error). Checked before each write, so messages are not written into a
/// connection that is already gone.
fn peer_closed(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => {
            // Unexpected bytes from the server: read and ignore them.
            let mut sink = [0u8; 512];
            let _ = stream.read(&mut sink);
            false
        }
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}
