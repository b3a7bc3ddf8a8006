//! A PostgreSQL session's start, done by the replay itself: the SSL request (`--pg-sslmode`),
//! the start-up packet (the captured parameters, with `--pg-user` and `--pg-database`), and
//! authentication (trust, cleartext, MD5, SCRAM-SHA-256) up to the first `ReadyForQuery`.
//! Messages are encoded with postgres-protocol's frontend encoders.

use anyhow::{anyhow, bail, Context as _};
use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tapline_core::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::frames::Frames;
use crate::conn::{self, Conn};
use crate::engine::Context;
use crate::target::{PgOptions, SslMode, Target};

/// Connects, starts up and authenticates: the session, ready for queries.
pub(crate) async fn open(
    target: &Target,
    opts: &PgOptions,
    captured: &[(String, String)],
    ctx: &Context,
) -> anyhow::Result<(Conn, Frames)> {
    let mut tcp = conn::connect(&target.host, target.port, ctx.wiring.timeout).await?;
    let addrs = (tcp.local_addr()?, tcp.peer_addr()?);
    let mut tls = None;
    let io: Box<dyn conn::Io> = match opts.sslmode {
        SslMode::Disable => Box::new(tcp),
        mode => {
            let mut buf = BytesMut::new();
            frontend::ssl_request(&mut buf);
            tcp.write_all(&buf).await?;
            let answer = tcp
                .read_u8()
                .await
                .context("reading the answer to SSLRequest")?;
            match (answer, &ctx.targets.tls) {
                (b'S', Some(config)) => {
                    let (io, info) = conn::tls(tcp, config, &target.host).await?;
                    tls = Some(info);
                    io
                }
                (b'N', _) if mode == SslMode::Prefer => Box::new(tcp),
                (b'N', _) => bail!(
                    "{}:{} refuses SSL (--pg-sslmode require)",
                    target.host,
                    target.port
                ),
                (other, _) => bail!(
                    "{}:{} answered SSLRequest with {other:#04x}",
                    target.host,
                    target.port
                ),
            }
        }
    };
    let mut conn = Conn::open(io, addrs, Protocol::Postgres, tls, &ctx.wiring).await;
    let mut frames = Frames::default();
    let mut buf = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![
        ("user", opts.user.as_str()),
        ("database", opts.database.as_str()),
    ];
    params.extend(
        captured
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "replication"))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    frontend::startup_message(params, &mut buf)?;
    conn.send(&buf).await?;
    authenticate(&mut conn, &mut frames, opts)
        .await
        .with_context(|| format!("PostgreSQL at {}:{}", target.host, target.port))?;
    Ok((conn, frames))
}

/// Answers the server's authentication requests until it is ready for queries.
async fn authenticate(
    conn: &mut Conn,
    frames: &mut Frames,
    opts: &PgOptions,
) -> anyhow::Result<()> {
    let password = || {
        opts.password.as_deref().ok_or_else(|| {
            anyhow!("the server asks for a password: set PGPASSWORD or --pg-password-file")
        })
    };
    let mut scram: Option<sasl::ScramSha256> = None;
    loop {
        let Some((tag, body)) = frames.next() else {
            let data = conn.recv().await?;
            if data.is_empty() {
                bail!("the server closed the connection during start-up");
            }
            frames.push(data);
            continue;
        };
        let mut out = BytesMut::new();
        match tag {
            b'R' => {
                let code = body
                    .get(..4)
                    .map_or(-1, |c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                let data = body.get(4..).unwrap_or_default();
                match code {
                    0 => continue,
                    3 => frontend::password_message(password()?.as_bytes(), &mut out)?,
                    5 => {
                        let salt: [u8; 4] = data.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(|| anyhow!("short MD5 request"))?;
                        let hash = md5_hash(opts.user.as_bytes(), password()?.as_bytes(), salt);
                        frontend::password_message(hash.as_bytes(), &mut out)?;
                    }
                    10 => {
                        let offered = data.split(|b| *b == 0).any(|m| m == sasl::SCRAM_SHA_256.as_bytes());
                        if !offered {
                            bail!("the server offers no SASL mechanism tapline speaks (SCRAM-SHA-256)");
                        }
                        let s = sasl::ScramSha256::new(password()?.as_bytes(), sasl::ChannelBinding::unsupported());
                        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut out)?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| anyhow!("SASL continue without a start"))?;
                        s.update(data).context("SCRAM")?;
                        frontend::sasl_response(s.message(), &mut out)?;
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| anyhow!("SASL final without a start"))?;
                        s.finish(data).context("SCRAM: the server's proof")?;
                        continue;
                    }
                    other => bail!("the server asks for an authentication tapline does not speak (code {other})"),
                }
                conn.send(&out).await?;
            }
            b'E' => bail!("{}", super::frames::error_text(&body)),
            b'Z' => return Ok(()),
            _ => {}
        }
    }
}
