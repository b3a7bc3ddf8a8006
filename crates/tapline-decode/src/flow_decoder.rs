//! [`FlowDecoder`]: turns one flow's two ordered byte streams into messages and transactions.
//!
//! The proxy (mapping flows) and the capture workers (reassembled TCP flows) both feed it.
//! A flow whose protocol is not known for sure is sniffed from its first bytes (held, a few
//! hundred at most, until they decide), with the port's hint as the fallback.

use tapline_core::{EventKind, Injected, Kind, Pipeline, Protocol, Side, Timestamp};

use crate::detect::{self, Certainty, Sniff};
use crate::http::HttpDecoder;
use crate::pgsql::{Frame, PgDecoder};

/// Most bytes held while sniffing; past this the port hint (or raw TCP) decides.
const SNIFF_MAX: usize = 512;

/// Decoding limits and choices.
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// Largest body kept per HTTP message; longer bodies are flagged truncated.
    pub body_limit: usize,
    /// Forced protocols by port (`--decode PORT=PROTO`); they win over hints and sniffing.
    pub overrides: Vec<(u16, Protocol)>,
    /// Whether `message` events carry their `fields` and `raw` bytes. Off only when no
    /// stage and no sink reads them: the messages are still framed, counted and paired
    /// into transactions, but their details are not built.
    pub message_fields: bool,
    /// Whether HTTP `transaction` events carry copies of the request and response heads.
    /// Off only when no stage and no sink reads transactions: they still come, paired and
    /// timed, with just the request line and the status.
    pub transaction_heads: bool,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            body_limit: 1 << 20,
            overrides: Vec::new(),
            message_fields: true,
            transaction_heads: true,
        }
    }
}

impl DecodeConfig {
    /// A configuration from the command line's `--body-limit` and `--decode PORT=PROTO`
    /// values; the error names the bad `--decode` value.
    pub fn from_args(body_limit: u64, decode: &[String]) -> Result<Self, String> {
        Ok(DecodeConfig {
            body_limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
            overrides: decode
                .iter()
                .map(|s| detect::parse_decode_override(s))
                .collect::<Result<_, _>>()?,
            message_fields: true,
            transaction_heads: true,
        })
    }

    /// This configuration for a run feeding `pipeline`: the details of messages and
    /// transactions off when no stage (any stage may observe them) and no sink reads them.
    pub fn for_pipeline(&self, pipeline: &Pipeline) -> DecodeConfig {
        DecodeConfig {
            message_fields: self.message_fields && pipeline.reads_details(Kind::Message),
            transaction_heads: self.transaction_heads && pipeline.reads_details(Kind::Transaction),
            ..self.clone()
        }
    }

    /// The protocol to start a flow between these ports with, and how sure it is: a forced
    /// mapping on the server (else client) port, else a port hint, else `Tcp` (sniff only).
    pub fn protocol_for_ports(&self, client_port: u16, server_port: u16) -> (Protocol, Certainty) {
        let forced = |port| {
            self.overrides
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, pr)| *pr)
        };
        if let Some(p) = forced(server_port).or_else(|| forced(client_port)) {
            return (p, Certainty::Forced);
        }
        let hint = detect::port_hint(server_port).or_else(|| detect::port_hint(client_port));
        (hint.unwrap_or(Protocol::Tcp), Certainty::Hinted)
    }
}

#[derive(Debug)]
enum Inner {
    /// Protocol not decided yet: bytes are held until it is.
    Sniff(Box<Sniffer>),
    Http(Box<HttpDecoder>),
    Postgres(Box<PgDecoder>),
    /// Raw TCP, TLS or UDP: nothing to decode.
    Opaque,
}

#[derive(Debug, Default)]
struct Sniffer {
    /// What the port suggests, used when the bytes say nothing clear.
    hint: Option<Protocol>,
    held: Vec<(Side, Timestamp, Vec<u8>)>,
    held_len: usize,
    client: Vec<u8>,
    server: Vec<u8>,
}

impl Sniffer {
    fn hold(&mut self, from: Side, ts: Timestamp, data: &[u8]) {
        let prefix = match from {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        };
        let room = 16usize.saturating_sub(prefix.len());
        prefix.extend_from_slice(&data[..data.len().min(room)]);
        self.held_len += data.len();
        self.held.push((from, ts, data.to_vec()));
    }

    /// The protocol, once the bytes (or `force`, when no more may be held) decide it.
    fn decide(&self, force: bool) -> Option<Protocol> {
        let fallback = self.hint.unwrap_or(Protocol::Tcp);
        let client = detect::sniff_client(&self.client);
        if let Sniff::Is(p) = client {
            return Some(p);
        }
        let force = force || self.held_len >= SNIFF_MAX;
        if self.client.is_empty() {
            return match detect::sniff_server(&self.server) {
                Sniff::Is(p) => Some(p),
                Sniff::NeedMore if !force => None,
                _ if self.server.is_empty() && !force => None,
                _ => Some(fallback),
            };
        }
        match client {
            Sniff::NeedMore if !force => None,
            _ => Some(fallback),
        }
    }
}

/// Decodes one flow. `protocol` is the protocol known or hinted for the flow; `Tcp` means
/// "sniff it from the first bytes".
#[derive(Debug)]
pub struct FlowDecoder {
    protocol: Protocol,
    inner: Inner,
    body_limit: usize,
    message_fields: bool,
    transaction_heads: bool,
}

impl FlowDecoder {
    /// A decoder for a flow known to carry `protocol` (a mapping proxy's scheme); `Tcp`
    /// sniffs the first bytes with no hint.
    pub fn new(protocol: Protocol, config: &DecodeConfig) -> Self {
        match protocol {
            Protocol::Tcp => Self::sniffing(None, config),
            p => Self::decided(p, config),
        }
    }

    /// A decoder for a flow between these ports (capture, `tcp` mappings): a forced
    /// `--decode` mapping is used as is; otherwise the bytes are sniffed, with the port's
    /// hint as the fallback.
    pub fn for_ports(client_port: u16, server_port: u16, config: &DecodeConfig) -> Self {
        match config.protocol_for_ports(client_port, server_port) {
            (p, Certainty::Forced) => Self::decided(p, config),
            (Protocol::Tcp, Certainty::Hinted) => Self::sniffing(None, config),
            (p, Certainty::Hinted) => Self::sniffing(Some(p), config),
        }
    }

    fn sniffing(hint: Option<Protocol>, config: &DecodeConfig) -> Self {
        FlowDecoder {
            protocol: hint.unwrap_or(Protocol::Tcp),
            inner: Inner::Sniff(Box::new(Sniffer {
                hint,
                ..Default::default()
            })),
            body_limit: config.body_limit,
            message_fields: config.message_fields,
            transaction_heads: config.transaction_heads,
        }
    }

    fn decided(protocol: Protocol, config: &DecodeConfig) -> Self {
        let mut decoder = FlowDecoder {
            protocol,
            inner: Inner::Opaque,
            body_limit: config.body_limit,
            message_fields: config.message_fields,
            transaction_heads: config.transaction_heads,
        };
        decoder.inner = decoder.inner_for(protocol);
        decoder
    }

    /// The decoder for `protocol`, with this flow's settings.
    fn inner_for(&self, protocol: Protocol) -> Inner {
        match protocol {
            Protocol::Http => Inner::Http(Box::new(HttpDecoder::with_transaction_heads(
                self.body_limit,
                self.transaction_heads,
            ))),
            Protocol::Postgres => {
                Inner::Postgres(Box::new(PgDecoder::with_fields(self.message_fields)))
            }
            Protocol::Tls | Protocol::Tcp | Protocol::Udp => Inner::Opaque,
        }
    }

    /// The protocol as decided so far (may change from `Tcp` once sniffed, and from
    /// `postgres` to `tls` when the connection is encrypted).
    pub fn protocol(&self) -> Protocol {
        match &self.inner {
            Inner::Postgres(pg) if pg.is_tls() => Protocol::Tls,
            _ => self.protocol,
        }
    }

    /// True when nothing more will be decoded from this flow (raw TCP, TLS, an upgraded or
    /// tunnelled HTTP connection): callers may stop feeding it.
    pub fn is_opaque(&self) -> bool {
        match &self.inner {
            Inner::Sniff(_) => false,
            Inner::Http(h) => h.is_opaque(),
            Inner::Postgres(pg) => pg.is_tls(),
            Inner::Opaque => true,
        }
    }

    /// How `side`'s next bytes split into PostgreSQL messages (see [`PgDecoder::frame`]);
    /// `Raw` for any other protocol.
    pub fn pg_frame(&self, side: Side, buf: &[u8]) -> Frame {
        match &self.inner {
            Inner::Postgres(pg) => pg.frame(side, buf),
            _ => Frame::Raw,
        }
    }

    /// The wire name of a whole PostgreSQL message framed by [`FlowDecoder::pg_frame`].
    pub fn pg_message_type(&self, side: Side, msg: &[u8]) -> &'static str {
        match &self.inner {
            Inner::Postgres(pg) => pg.message_type(side, msg),
            _ => "",
        }
    }

    /// Feeds one whole PostgreSQL message framed by [`FlowDecoder::pg_frame`], with its
    /// fields built only when `fields`.
    pub fn feed_pg_message(
        &mut self,
        side: Side,
        ts: Timestamp,
        msg: &[u8],
        fields: bool,
        out: &mut Vec<EventKind>,
    ) {
        match &mut self.inner {
            Inner::Postgres(pg) => pg.feed_message(side, ts, msg, fields, out),
            _ => self.feed(side, ts, msg, out),
        }
    }

    /// The next failed PostgreSQL statement's error is `injected`'s.
    pub fn inject_next(&mut self, injected: Injected) {
        if let Inner::Postgres(pg) = &mut self.inner {
            pg.inject_next(injected);
        }
    }

    /// Feeds in-order bytes from one side; decoded events are appended to `out`.
    pub fn feed(&mut self, from: Side, ts: Timestamp, data: &[u8], out: &mut Vec<EventKind>) {
        match &mut self.inner {
            Inner::Sniff(s) => {
                s.hold(from, ts, data);
                if let Some(p) = s.decide(false) {
                    self.settle(p, out);
                }
            }
            Inner::Http(h) => h.feed(from, ts, data, out),
            Inner::Postgres(pg) => pg.feed(from, ts, data, out),
            Inner::Opaque => {}
        }
    }

    /// Reports `len` bytes from `from` that will never arrive (capture gap).
    pub fn gap(&mut self, from: Side, len: u64, out: &mut Vec<EventKind>) {
        self.settle_now(out);
        match &mut self.inner {
            Inner::Http(h) => h.gap(from, len, out),
            Inner::Postgres(pg) => pg.gap(from, len),
            Inner::Sniff(_) | Inner::Opaque => {}
        }
    }

    /// The flow ended: flush what is pending (e.g. a close-delimited HTTP body).
    pub fn finish(&mut self, ts: Timestamp, out: &mut Vec<EventKind>) {
        self.settle_now(out);
        match &mut self.inner {
            Inner::Http(h) => h.finish(ts, out),
            Inner::Postgres(pg) => pg.finish(),
            Inner::Sniff(_) | Inner::Opaque => {}
        }
    }

    /// Decides a still-sniffing flow with what it has.
    fn settle_now(&mut self, out: &mut Vec<EventKind>) {
        if let Inner::Sniff(s) = &self.inner {
            let p = s.decide(true).unwrap_or(Protocol::Tcp);
            self.settle(p, out);
        }
    }

    /// Switches to `protocol` and replays the held bytes into its decoder.
    fn settle(&mut self, protocol: Protocol, out: &mut Vec<EventKind>) {
        let decided = self.inner_for(protocol);
        let Inner::Sniff(s) = std::mem::replace(&mut self.inner, decided) else {
            return;
        };
        self.protocol = protocol;
        for (from, ts, data) in s.held {
            self.feed(from, ts, &data, out);
        }
    }
}

/// Runs a stream decoder's `parse` over new bytes: in place when nothing is buffered,
/// else over the buffer with `data` appended. `parse` returns how many bytes it consumed;
/// the rest (an incomplete message) is what comes back to be buffered.
pub(crate) fn feed_buffered(
    mut buf: Vec<u8>,
    data: &[u8],
    parse: impl FnOnce(&[u8]) -> usize,
) -> Vec<u8> {
    if buf.is_empty() {
        let used = parse(data);
        buf.extend_from_slice(&data[used.min(data.len())..]);
    } else {
        buf.extend_from_slice(data);
        let used = parse(&buf);
        buf.drain(..used.min(buf.len()));
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DecodeConfig {
        DecodeConfig::from_args(1 << 20, &["5433=postgres".into(), "8000=tcp".into()]).unwrap()
    }

    #[test]
    fn from_args_rejects_bad_mappings() {
        let err = DecodeConfig::from_args(10, &["5433=mysql".into()]).unwrap_err();
        assert!(err.contains("mysql"), "{err}");
    }

    #[test]
    fn ports_force_or_hint() {
        let c = config();
        assert_eq!(
            c.protocol_for_ports(40000, 5433),
            (Protocol::Postgres, Certainty::Forced)
        );
        assert_eq!(
            c.protocol_for_ports(40000, 8000),
            (Protocol::Tcp, Certainty::Forced)
        );
        assert_eq!(
            c.protocol_for_ports(40000, 5432),
            (Protocol::Postgres, Certainty::Hinted)
        );
        assert_eq!(
            c.protocol_for_ports(40000, 9999),
            (Protocol::Tcp, Certainty::Hinted)
        );
    }

    #[test]
    fn sniffs_http_on_an_unknown_port() {
        let mut d = FlowDecoder::for_ports(40000, 9999, &config());
        let mut out = Vec::new();
        d.feed(Side::Client, Timestamp(1), b"GE", &mut out);
        assert_eq!(d.protocol(), Protocol::Tcp);
        d.feed(
            Side::Client,
            Timestamp(2),
            b"T / HTTP/1.1\r\nHost: a\r\n\r\n",
            &mut out,
        );
        assert_eq!(d.protocol(), Protocol::Http);
        d.feed(
            Side::Server,
            Timestamp(3),
            b"HTTP/1.1 204 No Content\r\n\r\n",
            &mut out,
        );
        let kinds: Vec<_> = out.iter().map(|e| e.name()).collect();
        assert_eq!(kinds, ["http_request", "http_response", "transaction"]);
    }

    #[test]
    fn sniffs_postgres_on_an_http_port() {
        let mut d = FlowDecoder::for_ports(40000, 8080, &config());
        let mut out = Vec::new();
        d.feed(
            Side::Client,
            Timestamp(1),
            &[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f],
            &mut out,
        );
        assert_eq!(d.protocol(), Protocol::Postgres);
        d.feed(Side::Server, Timestamp(2), b"S", &mut out);
        assert_eq!(d.protocol(), Protocol::Tls);
        assert!(d.is_opaque());
    }

    #[test]
    fn forced_tcp_and_unknown_bytes_stay_opaque() {
        let mut out = Vec::new();
        let mut d = FlowDecoder::for_ports(40000, 8000, &config());
        assert!(d.is_opaque());
        d.feed(
            Side::Client,
            Timestamp(1),
            b"GET / HTTP/1.1\r\n\r\n",
            &mut out,
        );
        let mut d = FlowDecoder::for_ports(40000, 2222, &config());
        d.feed(
            Side::Server,
            Timestamp(1),
            b"SSH-2.0-OpenSSH_9\r\n",
            &mut out,
        );
        assert_eq!(d.protocol(), Protocol::Tcp);
        assert!(d.is_opaque());
        assert!(out.is_empty());
    }

    #[test]
    fn the_hint_decides_mid_stream_bytes() {
        let mut d = FlowDecoder::for_ports(40000, 5432, &config());
        let mut out = Vec::new();
        // A capture that starts mid-connection: the server's ReadyForQuery.
        d.feed(Side::Server, Timestamp(1), b"Z\x00\x00\x00\x05I", &mut out);
        d.finish(Timestamp(2), &mut out);
        assert_eq!(d.protocol(), Protocol::Postgres);
        assert_eq!(out.len(), 1);
    }
}
