//! `psql` mappings and PostgreSQL's SSL negotiation. A client may open with an
//! `SSLRequest`, a `GSSENCRequest`, a TLS hello (PostgreSQL 17's direct SSL) or in
//! cleartext. When the mapping is intercepted, tapline answers the `SSLRequest` itself
//! (`S`), completes TLS with a leaf for the mapping's names, and opens the upstream leg as
//! `--upstream-tls` says (TLS when the server offers it, by default); GSS encryption is
//! refused (`N`: it cannot be intercepted) so clients fall back. The decoder then sees the
//! session from its startup message, decrypted, exactly as on cleartext. When the upstream
//! leg cannot be had, the client gets an `ErrorResponse` saying why.
//!
//! Without interception, bytes are relayed untouched (TLS stays opaque), unless
//! `--pg-refuse-ssl` answers `SSLRequest` (and `GSSENCRequest`) with `N`, so that clients
//! with `sslmode=prefer` continue in cleartext and get decoded.

use std::net::SocketAddr;
use std::sync::Arc;

use tapline_core::{Chunk, FlowEnd, PgError, Protocol, Route, Side, TlsInfo};
use tapline_decode::pgsql::encode;
use tapline_decode::FlowDecoder;
use tapline_tls::pg_start::{classify, PgStart, SSL_REQUEST};
use tapline_tls::{leg, server_name, Interceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::{Conn, UpstreamTls};
use crate::context::Shared;
use crate::flows::OpenFlow;
use crate::mapping::MappingSpec;
use crate::raw_mapping::{relay_mapping, upstream_addr};
use crate::relay::{end_of, relay};
use crate::tls::handshake::{accept, connect, read_hello, Opening};
use crate::tls::intercept::Destination;
use crate::tls::UpstreamTlsMode;

/// The ALPN protocol of PostgreSQL over TLS.
const ALPN: &[u8] = b"postgresql";
/// The SQLSTATE of the errors tapline answers with (`sqlclient_unable_to_establish_sqlconnection`).
const CANNOT_CONNECT: &str = "08001";
/// The largest startup message read before answering an error (PostgreSQL's own bound).
const MAX_STARTUP: usize = 10_000;

/// Serves one client of a `psql` mapping until it closes.
pub(crate) async fn serve(
    ctx: &Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    spec: &MappingSpec,
) {
    let host = spec.host.as_str();
    let interceptor = ctx.tls.intercepting([host], spec.port).cloned();
    if interceptor.is_none() && !ctx.tls.pg_refuse_ssl {
        return relay_mapping(ctx, client, peer, spec, None).await;
    }
    let mut first = Vec::new();
    let start = loop {
        match read_start(ctx, &mut client, &mut first).await {
            Err(end) => {
                let addr = upstream_addr(ctx, spec).await;
                return OpenFlow::failed(
                    ctx,
                    Protocol::Postgres,
                    Route::Mapping,
                    peer,
                    addr,
                    None,
                    end,
                )
                .await;
            }
            // Encryption tapline cannot see into: refused, the client goes on without it.
            Ok(PgStart::GssEncRequest) => {
                first.drain(..8);
                if client.write_all(b"N").await.is_err() {
                    return;
                }
            }
            Ok(start) => break start,
        }
    };
    let Some(interceptor) = interceptor else {
        // --pg-refuse-ssl without interception.
        if start == PgStart::SslRequest {
            first.drain(..8);
            if client.write_all(b"N").await.is_err() {
                return;
            }
        }
        let first = (!first.is_empty()).then(|| Chunk {
            from: Side::Client,
            data: first.into(),
        });
        return relay_mapping(ctx, client, peer, spec, first).await;
    };
    let session = Session {
        ctx,
        interceptor,
        peer,
        spec,
    };
    match start {
        PgStart::SslRequest => {
            first.drain(..8);
            session.tls(client, first, true).await
        }
        PgStart::DirectTls => session.tls(client, first, false).await,
        _ => session.cleartext(client, first).await,
    }
}

/// Reads until the client's first bytes say how it starts (more bytes may follow them in
/// `first`). A client that closes first starts in cleartext with what it sent.
async fn read_start(
    ctx: &Shared,
    client: &mut TcpStream,
    first: &mut Vec<u8>,
) -> Result<PgStart, FlowEnd> {
    let deadline = tokio::time::Instant::now() + ctx.limits.idle_timeout;
    let mut buf = [0u8; 1024];
    loop {
        match classify(first) {
            PgStart::NeedMore => {}
            start => return Ok(start),
        }
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Err(_) => return Err(FlowEnd::Timeout),
            Ok(Ok(0)) if first.is_empty() => return Err(FlowEnd::Fin),
            Ok(Ok(0)) => return Ok(PgStart::Cleartext),
            Ok(Ok(n)) => first.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(end_of(e)),
        }
    }
}

/// An intercepted `psql` mapping's client.
struct Session<'a> {
    ctx: &'a Arc<Shared>,
    interceptor: Arc<Interceptor>,
    peer: SocketAddr,
    spec: &'a MappingSpec,
}

/// The upstream leg of a session.
enum UpstreamLeg {
    Plain(TcpStream),
    Tls(Box<UpstreamTls>),
}

impl Session<'_> {
    /// A client that asked for TLS (`requested`: with an `SSLRequest`, answered here; else
    /// its hello came first, in `first`).
    async fn tls(self, mut client: TcpStream, first: Vec<u8>, requested: bool) {
        let upstream = self.upstream().await;
        if requested && client.write_all(b"S").await.is_err() {
            return;
        }
        let (reader, hello) = match read_hello(self.ctx, &mut client, &first).await {
            Opening::Hello(reader, hello) => (reader, hello),
            Opening::NotTls(_) => {
                return self
                    .client_failed(None, "the client did not start TLS after S".into())
                    .await
            }
            Opening::Invalid(why, _) => {
                return self
                    .client_failed(None, format!("bad TLS hello: {why}"))
                    .await
            }
            Opening::Ended(end) => {
                let addr = self.addr(&upstream).await;
                return self.failed(addr, None, end).await;
            }
        };
        let local = client.local_addr().unwrap_or(self.spec.listen);
        let dest = Destination::mapping(self.spec.host.clone(), self.spec.port, local, false);
        let names = dest.leaf_names(&hello);
        let alpn = hello.offered(ALPN).then_some(ALPN);
        let sni = hello.sni.clone();
        let client = match accept(self.ctx, &self.interceptor, reader, client, &names, alpn).await {
            Ok(client) => client,
            Err(why) => return self.client_failed(sni, why).await,
        };
        self.ctx.tls_counters.intercepted();
        let mut tls = TlsInfo {
            sni,
            client: Some(leg(client.get_ref().1)),
            server: None,
        };
        self.carry(client, upstream, &mut tls).await;
    }

    /// A client in cleartext (its first bytes in `first`).
    async fn cleartext(self, client: TcpStream, first: Vec<u8>) {
        let upstream = self.upstream().await;
        let first = (!first.is_empty()).then(|| Chunk {
            from: Side::Client,
            data: first.into(),
        });
        let mut tls = TlsInfo::default();
        match upstream {
            Ok((addr, leg)) => self.relay(client, addr, leg, first, &mut tls).await,
            Err((addr, why)) => self.refuse(client, addr, why, None).await,
        }
    }

    /// Carries the session once the client's leg is ready.
    async fn carry<C: Conn>(
        &self,
        client: C,
        upstream: Result<(SocketAddr, UpstreamLeg), (Option<SocketAddr>, String)>,
        tls: &mut TlsInfo,
    ) {
        match upstream {
            Ok((addr, leg)) => self.relay(client, addr, leg, None, tls).await,
            Err((addr, why)) => self.refuse(client, addr, why, Some(tls.clone())).await,
        }
    }

    /// Relays the session, decoded.
    async fn relay<C: Conn>(
        &self,
        mut client: C,
        addr: SocketAddr,
        upstream: UpstreamLeg,
        first: Option<Chunk>,
        tls: &mut TlsInfo,
    ) {
        if let UpstreamLeg::Tls(s) = &upstream {
            tls.server = Some(leg(s.get_ref().1));
        }
        let info = (tls.client.is_some() || tls.server.is_some()).then(|| Arc::new(tls.clone()));
        let (open, dispatch) = OpenFlow::start(
            self.ctx,
            Protocol::Postgres,
            Route::Mapping,
            self.peer,
            addr,
            info,
        )
        .await;
        let decoder = Some(FlowDecoder::new(Protocol::Postgres, &self.ctx.decode));
        let (stats, end) = match upstream {
            UpstreamLeg::Plain(mut s) => {
                relay(self.ctx, &dispatch, &mut client, &mut s, first, decoder).await
            }
            UpstreamLeg::Tls(mut s) => {
                relay(self.ctx, &dispatch, &mut client, &mut *s, first, decoder).await
            }
        };
        open.end(&dispatch, stats, end).await;
    }

    /// No upstream leg: the client is told why with an `ErrorResponse` (after its startup
    /// message, as a server would), and the flow ends as an error.
    async fn refuse<C: Conn>(
        &self,
        mut client: C,
        addr: Option<SocketAddr>,
        why: String,
        tls: Option<TlsInfo>,
    ) {
        tracing::warn!("--proxy '{}': {why}", self.spec);
        let _ = tokio::time::timeout(self.ctx.limits.connect_timeout, async {
            skip_startup(&mut client).await?;
            client
                .write_all(&encode::error_response(&PgError {
                    severity: "FATAL".into(),
                    code: CANNOT_CONNECT.into(),
                    message: format!("tapline: {why}"),
                }))
                .await?;
            client.flush().await?;
            client.shutdown().await
        })
        .await;
        let addr = match addr {
            Some(addr) => addr,
            None => upstream_addr(self.ctx, self.spec).await,
        };
        self.failed(addr, tls, FlowEnd::Error(why)).await;
    }

    /// The client's handshake failed: a counted flow error.
    async fn client_failed(&self, sni: Option<String>, why: String) {
        tracing::debug!("{}: {why}", self.peer);
        self.ctx.tls_counters.client_failed();
        let addr = upstream_addr(self.ctx, self.spec).await;
        let tls = TlsInfo {
            sni,
            ..TlsInfo::default()
        };
        self.failed(addr, Some(tls), FlowEnd::Error(why)).await;
    }

    /// Reports a flow of this session that ended before carrying anything.
    async fn failed(&self, addr: SocketAddr, tls: Option<TlsInfo>, end: FlowEnd) {
        let (ctx, peer, tls) = (self.ctx, self.peer, tls.map(Arc::new));
        OpenFlow::failed(
            ctx,
            Protocol::Postgres,
            Route::Mapping,
            peer,
            addr,
            tls,
            end,
        )
        .await;
    }

    async fn addr(
        &self,
        upstream: &Result<(SocketAddr, UpstreamLeg), (Option<SocketAddr>, String)>,
    ) -> SocketAddr {
        match upstream {
            Ok((addr, _)) | Err((Some(addr), _)) => *addr,
            Err((None, _)) => upstream_addr(self.ctx, self.spec).await,
        }
    }

    /// The upstream leg, as `--upstream-tls` says: an `SSLRequest` first unless `never`,
    /// then TLS if the server answers `S`; cleartext after `N` unless `require`.
    async fn upstream(&self) -> Result<(SocketAddr, UpstreamLeg), (Option<SocketAddr>, String)> {
        let (addr, mut tcp) = self
            .ctx
            .connect(&self.spec.host, self.spec.port)
            .await
            .map_err(|e| (None, e.message().to_string()))?;
        let mode = self.ctx.tls.upstream_tls;
        if mode == UpstreamTlsMode::Never {
            return Ok((addr, UpstreamLeg::Plain(tcp)));
        }
        let fail = |why: String| (Some(addr), why);
        let answer = tokio::time::timeout(self.ctx.limits.connect_timeout, async {
            tcp.write_all(&SSL_REQUEST).await?;
            tcp.read_u8().await
        })
        .await;
        match answer {
            Err(_) => Err(fail(
                "the server did not answer the SSLRequest in time".into(),
            )),
            Ok(Err(e)) => Err(fail(format!("the server left during the SSLRequest: {e}"))),
            Ok(Ok(b'S')) => {
                let Some(name) = server_name(None, &self.spec.host) else {
                    return Err(fail(format!(
                        "{} is no name to verify the server for",
                        self.spec.host
                    )));
                };
                match connect(self.ctx, &self.interceptor, tcp, name, vec![ALPN.to_vec()]).await {
                    Ok(tls) => Ok((addr, UpstreamLeg::Tls(Box::new(tls)))),
                    Err(why) => {
                        self.ctx.tls_counters.upstream_failed();
                        Err(fail(why))
                    }
                }
            }
            Ok(Ok(b'N')) if mode == UpstreamTlsMode::Require => Err(fail(
                "the server does not offer SSL (--upstream-tls require)".into(),
            )),
            Ok(Ok(b'N')) => Ok((addr, UpstreamLeg::Plain(tcp))),
            Ok(Ok(other)) => Err(fail(format!(
                "the server answered the SSLRequest with {:?}",
                char::from(other)
            ))),
        }
    }
}

/// Reads the client's startup message and drops it.
async fn skip_startup<R: AsyncRead + Unpin>(client: &mut R) -> std::io::Result<()> {
    let len = client.read_u32().await? as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Ok(());
    }
    let mut rest = vec![0u8; len - 4];
    client.read_exact(&mut rest).await.map(|_| ())
}
