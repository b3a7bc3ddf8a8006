//! A pcap/pcapng file as a source: tapline's capture reads and decodes it (link layers,
//! tunnels, fragments, TCP reassembly, HTTP and PostgreSQL decoders) into a pipeline with no
//! stages whose sink turns the events into feeds. One worker thread decodes, so feeds come in
//! the capture's packet order across connections (what `--limit` counts by).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tapline_capture::{Capture, CaptureConfig, CaptureError, Limits, SourceSpec};
use tapline_core::{Event, EventKind, EventSink, Kind, Pipeline, Side, Transaction};
use tapline_decode::DecodeConfig;
use tokio::sync::mpsc;

use super::{input_error, SourceError};
use crate::feed::{Feed, HttpOutcome, PgMessage};

/// How the capture is read: decoding overrides (`--decode PORT=PROTO`), body limit, and a
/// BPF filter.
#[derive(Debug, Clone, Default)]
pub struct PcapOptions {
    /// Decoding choices (`--decode`, `--body-limit`).
    pub decode: DecodeConfig,
    /// A BPF filter applied while reading.
    pub filter: Option<String>,
}

/// An opened capture file.
pub struct PcapSource {
    capture: Capture,
}

impl PcapSource {
    /// Opens the file and applies the filter.
    pub fn open(path: &Path, options: PcapOptions) -> Result<PcapSource, SourceError> {
        let config = CaptureConfig {
            source: SourceSpec::File(path.to_path_buf()),
            filter: options.filter,
            count: None,
            write: None,
            workers: 1,
            limits: Limits::default(),
            decode: options.decode,
        };
        match Capture::open(config) {
            Ok(capture) => Ok(PcapSource { capture }),
            Err(CaptureError::File { message, .. }) => {
                // libpcap's message may name the file already.
                let named = format!("{}: ", path.display());
                Err(input_error(
                    path,
                    message.strip_prefix(&named).unwrap_or(&message),
                ))
            }
            Err(e) => Err(input_error(path, e)),
        }
    }

    /// Decodes the whole file, sending feeds to `tx`; stops early when `tx` is closed.
    pub fn read(self, tx: mpsc::Sender<Feed>) -> Result<(), SourceError> {
        let stop = Arc::new(AtomicBool::new(false));
        let sink = Arc::new(FeedSink {
            tx,
            stop: stop.clone(),
        });
        let pipeline = Pipeline::new(Vec::new(), sink);
        let outcome = self
            .capture
            .run(&pipeline, &stop)
            .map_err(|e| SourceError::Read(e.to_string()))?;
        if let Some(message) = outcome.source_error {
            tracing::warn!("the capture file ends in a damaged record: {message}");
        }
        Ok(())
    }
}

/// Turns the capture's events into feeds.
struct FeedSink {
    tx: mpsc::Sender<Feed>,
    /// Set when the engine stopped listening: the capture stops reading.
    stop: Arc<AtomicBool>,
}

impl EventSink for FeedSink {
    fn emit(&self, event: &Event) {
        let Some(flow) = &event.flow else {
            return;
        };
        let conn = flow.id.0;
        let feed = match &event.kind {
            EventKind::HttpRequest(request) => Feed::HttpRequest {
                conn,
                ts: event.ts,
                request: Box::new(request.clone()),
            },
            EventKind::HttpResponse(response) if response.status >= 200 => Feed::HttpResponse {
                conn,
                outcome: HttpOutcome {
                    status: response.status,
                    body_len: response.body_len,
                    latency: response.latency,
                },
            },
            EventKind::Message(m) if m.from == Side::Client => Feed::PgMessage {
                conn,
                ts: event.ts,
                message: PgMessage::from_decoded(&m.type_name, &m.fields, m.raw.clone()),
            },
            EventKind::Transaction(Transaction::Postgres(tx)) => Feed::PgOutcome {
                conn,
                tx: Box::new(tx.clone()),
            },
            EventKind::FlowEnd { .. } => Feed::End { conn },
            _ => return,
        };
        if self.tx.blocking_send(feed).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn wants_details(&self, kind: Kind) -> bool {
        matches!(
            kind,
            Kind::HttpRequest | Kind::HttpResponse | Kind::Message | Kind::Transaction
        )
    }
}
