//! One captured PostgreSQL connection replayed as one session: after its own start-up
//! (`startup`), each unit's messages are sent as the capture has their bytes (so statement
//! names, parameter types, formats and values, NULLs and binary parameters, COPY data and
//! transaction blocks are what the client sent), then the server is read until it is ready
//! again (one `ReadyForQuery` per `Query` and `Sync` of the unit). The statements the
//! session's decoder completed meanwhile are the replayed outcomes, compared one by one with
//! the captured ones.

mod frames;
mod startup;

use tapline_core::{FlowEnd, PgTransaction, Transaction};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::engine::Context;
use crate::feed::{ConnId, PgMessage};
use crate::report::Exchange;
use crate::unit::{is_copy, Unit};
use frames::Frames;

/// Replays `first` and the units after it in one session.
pub(crate) async fn replay(
    conn: ConnId,
    first: Unit,
    mut rx: mpsc::Receiver<Unit>,
    ctx: &Context,
) -> anyhow::Result<()> {
    let Some((target, opts)) = &ctx.targets.postgres else {
        return Ok(());
    };
    let captured_startup = match &first {
        Unit::Pg {
            startup: Some(s), ..
        } => s.clone(),
        _ => Vec::new(),
    };
    let (session, mut frames) = startup::open(target, opts, &captured_startup, ctx).await?;
    let mut session = Some(session);
    let mut broken: Option<String> = None;
    let mut unit = first;
    loop {
        if let Unit::Pg {
            ts,
            messages,
            captured,
            ..
        } = unit
        {
            ctx.clock.wait(ts).await;
            let replayed = match (&mut session, &broken) {
                (Some(s), None) => run(s, &mut frames, &messages).await,
                (_, e) => Err(UnitError {
                    message: e.clone().unwrap_or_default(),
                    session: true,
                }),
            };
            if let Err(UnitError {
                message,
                session: true,
            }) = &replayed
            {
                if let Some(s) = session.take() {
                    broken = Some(format!("the session was lost earlier: {message}"));
                    s.close(FlowEnd::Error(message.clone())).await;
                }
            }
            compare(conn, &messages, captured, replayed, ctx);
        }
        match rx.recv().await {
            Some(next) => unit = next,
            None => break,
        }
    }
    if let Some(mut s) = session {
        // Terminate, as a client that is done does.
        let _ = s.send(b"X\0\0\0\x04").await;
        s.close(FlowEnd::Fin).await;
    }
    Ok(())
}

/// Why a unit could not be replayed; `session` says the session is lost with it.
struct UnitError {
    message: String,
    session: bool,
}

/// Sends one unit and reads until the server is ready again: the statements completed.
async fn run(
    conn: &mut Conn,
    frames: &mut Frames,
    messages: &[PgMessage],
) -> Result<Vec<PgTransaction>, UnitError> {
    let mut bytes = Vec::with_capacity(messages.iter().map(|m| m.raw.len()).sum());
    let mut expect: usize = 0;
    let mut previous = "";
    for m in messages {
        if !whole(&m.raw) {
            return Err(UnitError {
                message: format!(
                    "a {} message was not kept whole by the capture (over 1 MiB)",
                    m.type_name
                ),
                session: false,
            });
        }
        bytes.extend_from_slice(&m.raw);
        let name = m.type_name.as_str();
        match name {
            "Query" | "Sync" => expect += 1,
            // The server ignores a Sync that reaches it in copy-in mode (an extended-protocol
            // COPY's batch): the Sync after the data answers instead.
            _ if is_copy(name) && previous == "Sync" => expect -= 1,
            _ => {}
        }
        previous = name;
    }
    let lost = |e: std::io::Error| UnitError {
        message: e.to_string(),
        session: true,
    };
    conn.send(&bytes).await.map_err(lost)?;
    while expect > 0 {
        let data = conn.recv().await.map_err(lost)?;
        if data.is_empty() {
            return Err(UnitError {
                message: "the server closed the session".into(),
                session: true,
            });
        }
        frames.push(data);
        expect = expect.saturating_sub(frames.count_ready());
    }
    Ok(conn
        .take_transactions()
        .into_iter()
        .filter_map(|t| match t {
            Transaction::Postgres(pg) => Some(pg),
            Transaction::Http { .. } => None,
        })
        .collect())
}

/// True when `raw` is one whole message: tag, length, and that many bytes.
fn whole(raw: &[u8]) -> bool {
    raw.len() >= 5 && u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize + 1 == raw.len()
}

/// Adds the unit's statements to the report, captured against replayed in order.
fn compare(
    conn: ConnId,
    messages: &[PgMessage],
    captured: Vec<PgTransaction>,
    replayed: Result<Vec<PgTransaction>, UnitError>,
    ctx: &Context,
) {
    let mut report = ctx.report.lock();
    let (replayed, error) = match replayed {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e.message)),
    };
    let first_sql = || {
        messages
            .iter()
            .find_map(|m| m.sql.clone())
            .unwrap_or_else(|| {
                messages
                    .first()
                    .map(|m| m.type_name.clone())
                    .unwrap_or_default()
            })
    };
    if captured.is_empty() && replayed.is_empty() {
        if let Some(e) = error {
            report.add(
                Exchange::compare(conn, "postgres", first_sql(), None, Err(e)),
                (None, None),
            );
        }
        return;
    }
    for i in 0..captured.len().max(replayed.len()) {
        let (c, r) = (captured.get(i), replayed.get(i));
        let what = r.or(c).map(|t| t.sql.clone()).unwrap_or_else(first_sql);
        let outcome = r.map(Into::into).ok_or_else(|| {
            error
                .clone()
                .unwrap_or_else(|| "the statement did not complete in the replay".into())
        });
        report.add(
            Exchange::compare(conn, "postgres", what, c.map(Into::into), outcome),
            (c.map(|t| t.latency), r.map(|t| t.latency)),
        );
    }
}
