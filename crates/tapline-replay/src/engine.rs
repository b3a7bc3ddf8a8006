//! The run: the source's feeds become units (per captured connection, through the
//! selection), each captured connection gets a task with its own replay connection, and
//! units reach their task over a bounded channel, so a slow target slows the reading of the
//! capture instead of filling memory. Tasks pace units by their captured times. The first
//! connection that cannot be set up (refused, TLS, authentication) ends the run with its
//! error; failures after that are the report's.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;
use tapline_core::{Kind, Pipeline, Timestamp};
use tapline_decode::DecodeConfig;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::conn::Wiring;
use crate::feed::{ConnId, Feed};
use crate::report::Report;
use crate::source::Source;
use crate::target::Targets;
use crate::unit::{Assembler, Ready, Selection, Unit};
use crate::Speed;

/// Feeds read ahead of the engine.
const FEED_QUEUE: usize = 4096;
/// Units queued per connection ahead of its task.
const UNIT_QUEUE: usize = 256;

/// What to replay, where, and how.
pub struct Replay {
    /// The traffic.
    pub source: Source,
    /// Where it goes.
    pub targets: Targets,
    /// Which units.
    pub selection: Selection,
    /// How fast.
    pub speed: Speed,
    /// Longest wait for a connection or an answer.
    pub timeout: Duration,
    /// How replayed bytes are decoded (`--body-limit`).
    pub decode: DecodeConfig,
}

/// When captured units are due in the replay: the first unit now, the others as far after
/// it as they were captured, divided by the speed.
pub(crate) struct Clock {
    /// When the first unit was replayed, and when it was captured.
    origin: OnceLock<(Instant, Timestamp)>,
    speed: Speed,
}

impl Clock {
    /// Sets the origin at the first unit (captured at `ts`); later calls change nothing.
    fn start(&self, ts: Timestamp) -> (Instant, Timestamp) {
        *self.origin.get_or_init(|| (Instant::now(), ts))
    }

    /// Waits until the unit captured at `ts` is due.
    pub async fn wait(&self, ts: Timestamp) {
        if let (Speed::Factor(f), Some((start, first))) = (self.speed, self.origin.get()) {
            let due = *start + ts.since(*first).div_f64(f);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// What every connection task shares.
pub(crate) struct Context {
    /// Pipeline, ids, decoding, timeout.
    pub wiring: Wiring,
    /// Where to connect.
    pub targets: Targets,
    /// Pacing.
    pub clock: Clock,
    /// The comparison, filled as exchanges end.
    pub report: Arc<Mutex<Report>>,
}

/// Replays `replay` into `pipeline`'s stages and outputs, filling `report` as exchanges end.
/// Errors: an unreadable source, a capture with nothing to replay, the first connection that
/// cannot be set up.
pub async fn run(
    replay: Replay,
    pipeline: Pipeline,
    report: Arc<Mutex<Report>>,
) -> anyhow::Result<()> {
    let Replay {
        source,
        targets,
        selection,
        speed,
        timeout,
        decode,
    } = replay;
    let decode = DecodeConfig {
        message_fields: pipeline.reads_details(Kind::Message),
        // The comparison reads the responses' body lengths off the transactions.
        transaction_heads: true,
        ..decode
    };
    let (tx, mut rx) = mpsc::channel(FEED_QUEUE);
    let reader = source.start(tx).context("cannot start reading")?;
    let started = Instant::now();
    let ctx = Arc::new(Context {
        wiring: Wiring {
            pipeline,
            ids: Default::default(),
            decode,
            timeout,
        },
        targets,
        clock: Clock {
            origin: OnceLock::new(),
            speed,
        },
        report: report.clone(),
    });
    let mut assembler = Assembler::new(selection);
    let mut conns: HashMap<ConnId, mpsc::Sender<Unit>> = HashMap::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut unrouted = Unrouted::default();
    let mut ready = Vec::new();
    let mut last = Timestamp::default();
    let mut reading = true;
    while reading {
        tokio::select! {
            feed = rx.recv() => match feed {
                Some(feed) => {
                    if let Some(feed) = unrouted.route(feed, &ctx.targets) {
                        assembler.push(feed, &mut ready);
                    }
                }
                None => {
                    assembler.finish(&mut ready);
                    reading = false;
                }
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => joined??,
        }
        for r in ready.drain(..) {
            match r {
                Ready::Unit(conn, unit) => {
                    ctx.clock.start(unit.ts());
                    last = last.max(unit.ts());
                    let sender = match conns.entry(conn) {
                        Entry::Occupied(open) => open.into_mut(),
                        Entry::Vacant(new) => {
                            // A connection opens when its first unit is due: reading stays
                            // this close to the replay however many connections the
                            // capture holds.
                            ctx.clock.wait(unit.ts()).await;
                            let (tx, rx) = mpsc::channel(UNIT_QUEUE);
                            tasks.spawn(connection(conn, rx, ctx.clone()));
                            new.insert(tx)
                        }
                    };
                    // A task that stopped has its error waiting in `tasks`.
                    let _ = sender.send(unit).await;
                }
                Ready::End(conn) => {
                    conns.remove(&conn);
                }
            }
        }
        if assembler.full() {
            break;
        }
    }
    drop(rx);
    drop(conns);
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    if let Ok(Err(e)) = reader.join() {
        return Err(e.into());
    }
    {
        let mut r = report.lock();
        r.units_seen = assembler.seen;
        r.units_replayed = assembler.selected;
        let (start, first) = ctx.clock.origin.get().copied().unwrap_or((started, last));
        r.captured_span = last.since(first);
        r.elapsed = start.elapsed();
    }
    if assembler.seen == 0 {
        anyhow::bail!("nothing to replay: {}", unrouted.explain());
    }
    if assembler.selected == 0 {
        anyhow::bail!(
            "nothing to replay: none of the {} captured units passed --limit and the filters",
            assembler.seen
        );
    }
    Ok(())
}

/// One captured connection's task: a replay connection of the first unit's protocol.
async fn connection(
    conn: ConnId,
    mut rx: mpsc::Receiver<Unit>,
    ctx: Arc<Context>,
) -> anyhow::Result<()> {
    let Some(first) = rx.recv().await else {
        return Ok(());
    };
    match first {
        Unit::Http { .. } => crate::http::replay(conn, first, rx, &ctx).await,
        Unit::Pg { .. } => crate::pg::replay(conn, first, rx, &ctx).await,
    }
}

/// Feeds of protocols that have no `--to`, counted to explain an empty replay.
#[derive(Default)]
struct Unrouted {
    http: u64,
    postgres: u64,
}

impl Unrouted {
    /// The feed, when its protocol has a target.
    fn route(&mut self, feed: Feed, targets: &Targets) -> Option<Feed> {
        let routed = match &feed {
            Feed::HttpRequest { .. } | Feed::HttpResponse { .. } => targets.http.is_some(),
            Feed::PgMessage { .. } | Feed::PgOutcome { .. } => targets.postgres.is_some(),
            Feed::End { .. } => true,
        };
        match &feed {
            Feed::HttpRequest { .. } if !routed => self.http += 1,
            Feed::PgMessage { message, .. } if !routed && message.type_name == "Query" => {
                self.postgres += 1
            }
            Feed::PgMessage { message, .. } if !routed && message.type_name == "Execute" => {
                self.postgres += 1
            }
            _ => {}
        }
        routed.then_some(feed)
    }

    fn explain(&self) -> String {
        match (self.http, self.postgres) {
            (0, 0) => "the input has no HTTP requests or PostgreSQL statements".into(),
            (h, p) => format!(
                "the input's {h} HTTP requests and {p} PostgreSQL statements have no --to target (--to http=H:P, https=H:P, postgres=H:P)"
            ),
        }
    }
}
