//! The proxy's `-w FILE.pcap`: what the proxy carried, as synthesised Ethernet/IP/TCP packets
//! per flow, so tshark and Wireshark follow and decode the streams.
//!
//! Each flow gets its real endpoints (`flow.client`, `flow.server`; both as IPv6, IPv4-mapped,
//! when their families differ), a three-way handshake at `flow_start`, payload in segments of
//! at most one MSS with consistent sequence and acknowledgement numbers, and a FIN exchange
//! (or a RST) at `flow_end`. The bytes come from `chunk` events (tunnels, TCP and PostgreSQL
//! mappings). Forward-proxy HTTP flows have no raw chunks; for them the HTTP/1.1 bytes are
//! rebuilt from the `http_request`/`http_response` events: the head as the upstream saw it and
//! the kept body, with `Content-Length` matching the bytes written.
//!
//! Headers are built with etherparse's `PacketBuilder`, which fills in lengths and the IPv4
//! and TCP checksums, so tshark reports no checksum errors.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::PacketBuilder;
use parking_lot::Mutex;
use tapline_core::{
    Event, EventKind, EventSink, Flow, FlowEnd, FlowId, Headers, HttpRequest, HttpResponse, Kind,
    Side, Timestamp,
};
use tapline_decode::http1::framing;
use tapline_decode::http1::write::{
    write_fields, write_length, write_request_line, write_status_line, FramingFields,
};

/// Largest TCP payload per synthesised IPv4 segment (Ethernet MTU 1500 − 40).
const MSS_V4: usize = 1460;
/// Largest TCP payload per synthesised IPv6 segment (1500 − 60).
const MSS_V6: usize = 1440;
/// Made-up, locally administered MAC addresses for the two ends.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// pcap link type: Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;
/// Snap length declared in the file header.
const SNAPLEN: u32 = 65_535;
const WINDOW: u16 = 65_535;

/// Writes what the proxy carried as a pcap file.
pub struct PcapExport {
    inner: Mutex<Inner>,
}

struct Inner {
    writer: PcapWriter,
    flows: HashMap<FlowId, TcpFlow>,
    name: String,
    failed: bool,
}

/// Writes pcap records.
struct PcapWriter {
    out: Box<dyn Write + Send>,
    /// Scratch space for one frame.
    packet: Vec<u8>,
}

/// One synthesised TCP connection.
struct TcpFlow {
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of each side.
    client_seq: u32,
    server_seq: u32,
    /// Raw chunks were seen: HTTP events are not rebuilt into bytes.
    raw: bool,
}

/// TCP flags of one synthesised segment.
#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    psh: bool,
    fin: bool,
    rst: bool,
}

impl PcapExport {
    /// Creates (or truncates) `path` and writes the pcap file header.
    pub fn create(path: &Path) -> io::Result<PcapExport> {
        let file = File::create(path)?;
        PcapExport::new(
            Box::new(BufWriter::with_capacity(1 << 16, file)),
            &path.display().to_string(),
        )
    }

    /// A pcap export to any writer; `name` says which in diagnostics.
    pub fn new(mut out: Box<dyn Write + Send>, name: &str) -> io::Result<PcapExport> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapExport {
            inner: Mutex::new(Inner {
                writer: PcapWriter {
                    out,
                    packet: Vec::with_capacity(2048),
                },
                flows: HashMap::new(),
                name: name.to_string(),
                failed: false,
            }),
        })
    }
}

impl EventSink for PcapExport {
    fn emit(&self, event: &Event) {
        let Some(flow) = event.flow.as_deref() else {
            return;
        };
        let ts = event.ts;
        let mut inner = self.inner.lock();
        if inner.failed {
            return;
        }
        let result = match &event.kind {
            EventKind::FlowStart => inner.open(flow, ts).map(|_| ()),
            EventKind::Chunk(chunk) => inner.data(flow, ts, chunk.from, &chunk.data, true),
            EventKind::HttpRequest(request) if request.method != "CONNECT" => {
                inner.data(flow, ts, Side::Client, &request_bytes(request), false)
            }
            EventKind::HttpResponse(response) if !answers_connect(response) => {
                inner.data(flow, ts, Side::Server, &response_bytes(response), false)
            }
            EventKind::FlowEnd { end, .. } => inner.close(flow.id, ts, end),
            _ => Ok(()),
        };
        if let Err(e) = result {
            inner.failed = true;
            tracing::error!("cannot write the pcap export {}: {e}", inner.name);
        }
    }

    fn wants_chunks(&self) -> bool {
        true
    }

    fn wants_details(&self, kind: Kind) -> bool {
        matches!(kind, Kind::HttpRequest | Kind::HttpResponse)
    }

    fn flush(&self) {
        let mut inner = self.inner.lock();
        if let Err(e) = inner.writer.out.flush() {
            tracing::error!("cannot write the pcap export {}: {e}", inner.name);
        }
    }
}

impl Inner {
    /// The flow's TCP state, opening it (with a handshake) on first sight.
    fn open(&mut self, flow: &Flow, ts: Timestamp) -> io::Result<&mut TcpFlow> {
        match self.flows.entry(flow.id) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => {
                let mut tcp = TcpFlow::new(flow);
                self.writer.handshake(&mut tcp, ts)?;
                Ok(v.insert(tcp))
            }
        }
    }

    /// Writes `data` from `from` in MSS-sized segments. Rebuilt HTTP (`raw == false`) is
    /// skipped on flows that carry raw chunks.
    fn data(
        &mut self,
        flow: &Flow,
        ts: Timestamp,
        from: Side,
        data: &[u8],
        raw: bool,
    ) -> io::Result<()> {
        self.open(flow, ts)?;
        let Inner { writer, flows, .. } = self;
        let Some(tcp) = flows.get_mut(&flow.id) else {
            return Ok(());
        };
        if raw {
            tcp.raw = true;
        } else if tcp.raw {
            return Ok(());
        }
        let mss = if tcp.client.is_ipv4() { MSS_V4 } else { MSS_V6 };
        let push = Flags {
            ack: true,
            psh: true,
            ..Flags::default()
        };
        for piece in data.chunks(mss) {
            writer.segment(tcp, ts, from, push, piece)?;
            let seq = match from {
                Side::Client => &mut tcp.client_seq,
                Side::Server => &mut tcp.server_seq,
            };
            *seq = seq.wrapping_add(piece.len() as u32);
        }
        Ok(())
    }

    /// Ends the flow: FIN from the client, FIN from the server, last ACK (or one RST).
    fn close(&mut self, id: FlowId, ts: Timestamp, end: &FlowEnd) -> io::Result<()> {
        let Some(mut tcp) = self.flows.remove(&id) else {
            return Ok(());
        };
        let w = &mut self.writer;
        if *end == FlowEnd::Rst {
            let rst = Flags {
                rst: true,
                ack: true,
                ..Flags::default()
            };
            return w.segment(&tcp, ts, Side::Client, rst, &[]);
        }
        let fin = Flags {
            fin: true,
            ack: true,
            ..Flags::default()
        };
        w.segment(&tcp, ts, Side::Client, fin, &[])?;
        tcp.client_seq = tcp.client_seq.wrapping_add(1);
        w.segment(&tcp, ts, Side::Server, fin, &[])?;
        tcp.server_seq = tcp.server_seq.wrapping_add(1);
        w.segment(&tcp, ts, Side::Client, Flags::ack(), &[])
    }
}

impl PcapWriter {
    /// SYN, SYN-ACK, ACK.
    fn handshake(&mut self, tcp: &mut TcpFlow, ts: Timestamp) -> io::Result<()> {
        self.segment(tcp, ts, Side::Client, Flags::syn(), &[])?;
        tcp.client_seq = tcp.client_seq.wrapping_add(1);
        let syn_ack = Flags {
            syn: true,
            ack: true,
            ..Flags::default()
        };
        self.segment(tcp, ts, Side::Server, syn_ack, &[])?;
        tcp.server_seq = tcp.server_seq.wrapping_add(1);
        self.segment(tcp, ts, Side::Client, Flags::ack(), &[])
    }

    /// Writes one TCP segment from `from` as a pcap record.
    fn segment(
        &mut self,
        tcp: &TcpFlow,
        ts: Timestamp,
        from: Side,
        flags: Flags,
        payload: &[u8],
    ) -> io::Result<()> {
        let (src, dst, seq, ack, src_mac, dst_mac) = match from {
            Side::Client => (
                tcp.client,
                tcp.server,
                tcp.client_seq,
                tcp.server_seq,
                CLIENT_MAC,
                SERVER_MAC,
            ),
            Side::Server => (
                tcp.server,
                tcp.client,
                tcp.server_seq,
                tcp.client_seq,
                SERVER_MAC,
                CLIENT_MAC,
            ),
        };
        let link = PacketBuilder::ethernet2(src_mac, dst_mac);
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => link.ipv4(s.octets(), d.octets(), 64),
            (s, d) => link.ipv6(v6(s), v6(d), 64),
        };
        let mut builder = ip.tcp(src.port(), dst.port(), seq, WINDOW);
        if flags.syn {
            builder = builder.syn();
        }
        if flags.ack {
            builder = builder.ack(ack);
        }
        if flags.psh {
            builder = builder.psh();
        }
        if flags.fin {
            builder = builder.fin();
        }
        if flags.rst {
            builder = builder.rst();
        }
        self.packet.clear();
        builder
            .write(&mut self.packet, payload)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let micros = ts.as_micros().max(0);
        let len = self.packet.len() as u32;
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        record[4..8].copy_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        record[8..12].copy_from_slice(&len.to_le_bytes());
        record[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(&self.packet)
    }
}

impl TcpFlow {
    /// A connection between the flow's endpoints, not yet opened.
    fn new(flow: &Flow) -> TcpFlow {
        let (client, server) = same_family(flow.client, flow.server);
        // Deterministic, well-spread initial sequence numbers.
        let isn = (flow.id.0 as u32).wrapping_mul(0x9e37_79b9);
        TcpFlow {
            client,
            server,
            client_seq: isn,
            server_seq: isn ^ 0x5bd1_e995,
            raw: false,
        }
    }
}

impl Flags {
    fn syn() -> Flags {
        Flags {
            syn: true,
            ..Flags::default()
        }
    }

    fn ack() -> Flags {
        Flags {
            ack: true,
            ..Flags::default()
        }
    }
}

/// Both addresses in one family: as they are when they agree, else both as IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let to_v6 = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip()).into()), s.port());
    (to_v6(a), to_v6(b))
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// True for the proxy's answer to a `CONNECT` (not part of the tunnelled stream).
fn answers_connect(response: &HttpResponse) -> bool {
    response
        .request
        .as_ref()
        .is_some_and(|r| r.method == "CONNECT")
}

/// The request as sent upstream: origin-form request line, the fields without hop-by-hop
/// ones and with the framing replaced by a `Content-Length` of the kept body, the body.
fn request_bytes(r: &HttpRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.body.len());
    let path = if r.path.is_empty() { "/" } else { &r.path };
    write_request_line(
        &mut out,
        r.method.as_bytes(),
        path.as_bytes(),
        version(&r.version),
    );
    let framed =
        r.headers.get("content-length").is_some() || r.headers.get("transfer-encoding").is_some();
    write_fields(&mut out, fields(&r.headers), FramingFields::Drop);
    if framed || !r.body.is_empty() {
        write_length(&mut out, r.body.len() as u64);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&r.body);
    out
}

/// The response as sent to the client: status line, the fields without hop-by-hop ones and
/// with the framing replaced by a `Content-Length` of the kept body (except where a response
/// has no body), the body.
fn response_bytes(r: &HttpResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.body.len());
    write_status_line(&mut out, version(&r.version), r.status, r.reason.as_bytes());
    let head = r.request.as_ref().is_some_and(|q| q.method == "HEAD");
    if !framing::has_body(r.status, head) {
        write_fields(&mut out, fields(&r.headers), FramingFields::DropCoding);
        out.extend_from_slice(b"\r\n");
        return out;
    }
    write_fields(&mut out, fields(&r.headers), FramingFields::Drop);
    write_length(&mut out, r.body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&r.body);
    out
}

fn fields(headers: &Headers) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
}

fn version(v: &str) -> &[u8] {
    if v.is_empty() {
        b"HTTP/1.1"
    } else {
        v.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::testing::*;

    #[test]
    fn rebuilt_http_has_consistent_content_length() {
        let mut r = request();
        r.method = "POST".into();
        r.headers.add("Transfer-Encoding", "chunked");
        r.body = Bytes::from_static(b"hello");
        r.body_len = 5;
        assert_eq!(
            String::from_utf8(request_bytes(&r)).unwrap(),
            "POST /bytes/10 HTTP/1.1\r\nHost: 127.0.0.1:7070\r\nUser-Agent: curl/8.0\r\n\
             Content-Length: 5\r\n\r\nhello"
        );
        let mut resp = response();
        resp.body = Bytes::from_static(b"0123");
        resp.body_truncated = true;
        assert_eq!(
            String::from_utf8(response_bytes(&resp)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n0123"
        );
        resp.status = 204;
        assert_eq!(
            String::from_utf8(response_bytes(&resp)).unwrap(),
            "HTTP/1.1 204 OK\r\nContent-Length: 10\r\n\r\n"
        );
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let (a, b) = same_family("127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(a, "[::ffff:127.0.0.1]:1".parse::<SocketAddr>().unwrap());
        assert_eq!(b, "[::1]:2".parse::<SocketAddr>().unwrap());
    }
}
