//! One replay connection: its socket (TCP, or TLS over it), the flow it is in tapline's
//! event model (`mode: "replay"`), and the decoder both directions' bytes go through. What the
//! decoder makes goes to the run's pipeline (stages, then outputs) as a capture's would, and
//! the transactions are kept for the comparison.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapline_core::{
    Dispatch, EventKind, Flow, FlowEnd, FlowIds, FlowStats, Mode, Pipeline, Protocol, Route, Side,
    Timestamp, TlsInfo, Transaction,
};
use tapline_decode::{DecodeConfig, FlowDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// Bytes read from the server at a time.
const READ_SIZE: usize = 16 * 1024;

/// A byte stream a replay connection runs over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What every replay connection shares: the pipeline, flow ids, decoding settings, and how
/// long to wait for the server.
pub(crate) struct Wiring {
    /// The run's pipeline (mode `replay`).
    pub pipeline: Pipeline,
    /// Flow ids for replay connections.
    pub ids: FlowIds,
    /// How replayed bytes are decoded (the pipeline's view of details applied).
    pub decode: DecodeConfig,
    /// Longest wait for a connection or an answer.
    pub timeout: Duration,
}

/// Connects to `host:port` within the timeout.
pub(crate) async fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => {
            tcp.set_nodelay(true)?;
            Ok(tcp)
        }
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("{host}:{port}: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{host}:{port}: no connection within {timeout:?}"),
        )),
    }
}

/// TLS over `tcp` to `name`, with what it negotiated.
pub(crate) async fn tls(
    tcp: TcpStream,
    config: &Arc<ClientConfig>,
    name: &str,
) -> io::Result<(Box<dyn Io>, TlsInfo)> {
    let server = ServerName::try_from(name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
    let stream = TlsConnector::from(config.clone())
        .connect(server, tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS with {name}: {e}")))?;
    let info = TlsInfo {
        sni: Some(name.to_string()),
        client: None,
        server: Some(tapline_tls::leg(stream.get_ref().1)),
    };
    Ok((Box::new(stream), info))
}

/// An open replay connection.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    dispatch: Dispatch,
    decoder: FlowDecoder,
    stats: FlowStats,
    started: Instant,
    timeout: Duration,
    buf: Vec<u8>,
    transactions: Vec<Transaction>,
    /// The server ended its stream (the decoder was told).
    ended: bool,
}

impl Conn {
    /// A connection over `io` (already connected, TLS done) carrying `protocol`: its flow
    /// starts.
    pub async fn open(
        io: Box<dyn Io>,
        addrs: (SocketAddr, SocketAddr),
        protocol: Protocol,
        tls: Option<TlsInfo>,
        wiring: &Wiring,
    ) -> Conn {
        let mut flow = Flow::new(
            wiring.ids.next_id(),
            Mode::Replay,
            protocol,
            Route::Replay,
            addrs.0,
            addrs.1,
            Timestamp::now(),
        );
        if let Some(tls) = tls {
            flow = flow.with_tls(tls);
        }
        let dispatch = wiring.pipeline.dispatch(&Arc::new(flow));
        dispatch.event(Timestamp::now(), EventKind::FlowStart).await;
        Conn {
            io,
            dispatch,
            decoder: FlowDecoder::new(protocol, &wiring.decode),
            stats: FlowStats::default(),
            started: Instant::now(),
            timeout: wiring.timeout,
            buf: vec![0; READ_SIZE],
            transactions: Vec::new(),
            ended: false,
        }
    }

    /// Writes `bytes` to the server (and through the decoder).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.stats.add(Side::Client, bytes.len());
        self.decode(Side::Client, bytes.len(), Some(bytes)).await;
        Ok(())
    }

    /// Reads what the server sent next (empty at its end of stream), within the timeout.
    pub async fn recv(&mut self) -> io::Result<&[u8]> {
        let n = match tokio::time::timeout(self.timeout, self.io.read(&mut self.buf)).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.timeout),
                ))
            }
        };
        if n > 0 {
            self.stats.add(Side::Server, n);
            self.decode(Side::Server, n, None).await;
        } else if !self.ended {
            // The server's end of stream completes a body read until close.
            self.ended = true;
            let mut out = Vec::new();
            self.decoder.finish(Timestamp::now(), &mut out);
            self.deliver(out).await;
        }
        Ok(&self.buf[..n])
    }

    /// The transactions decoded since the last call.
    pub fn take_transactions(&mut self) -> Vec<Transaction> {
        std::mem::take(&mut self.transactions)
    }

    /// Ends the connection and its flow (pending decoded events first).
    pub async fn close(mut self, end: FlowEnd) {
        let _ = self.io.shutdown().await;
        if !self.ended {
            let mut out = Vec::new();
            self.decoder.finish(Timestamp::now(), &mut out);
            self.deliver(out).await;
        }
        let kind = EventKind::FlowEnd {
            stats: self.stats,
            end,
            duration: self.started.elapsed(),
        };
        self.dispatch.event(Timestamp::now(), kind).await;
    }

    /// Feeds `side`'s bytes (`bytes`, or the first `n` of the read buffer) to the decoder
    /// and delivers what it made.
    async fn decode(&mut self, side: Side, n: usize, bytes: Option<&[u8]>) {
        let mut out = Vec::new();
        let data = match bytes {
            Some(b) => b,
            None => &self.buf[..n],
        };
        self.decoder.feed(side, Timestamp::now(), data, &mut out);
        self.deliver(out).await;
    }

    async fn deliver(&mut self, out: Vec<EventKind>) {
        let ts = Timestamp::now();
        for kind in out {
            if let EventKind::Transaction(tx) = &kind {
                self.transactions.push(tx.clone());
            }
            self.dispatch.decoded(ts, kind).await;
        }
    }
}
