use proptest::prelude::*;
use tapline_core::Transaction;

use super::*;

/// Feeds `script` (side, ts, bytes) and finishes at the last ts + 1.
fn decode(script: &[(Side, i64, &[u8])]) -> Vec<EventKind> {
    decode_with(HttpDecoder::new(1 << 20), script)
}

fn decode_with(mut d: HttpDecoder, script: &[(Side, i64, &[u8])]) -> Vec<EventKind> {
    let mut out = Vec::new();
    let mut last = 0;
    for (side, ts, data) in script {
        d.feed(*side, Timestamp(*ts), data, &mut out);
        last = *ts;
    }
    d.finish(Timestamp(last + 1), &mut out);
    out
}

fn requests(events: &[EventKind]) -> Vec<&HttpRequest> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::HttpRequest(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn responses(events: &[EventKind]) -> Vec<&HttpResponse> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::HttpResponse(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn transactions(events: &[EventKind]) -> Vec<(String, u16, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::Transaction(Transaction::Http {
                request,
                response,
                latency,
            }) => Some((
                format!("{} {}", request.method, request.path),
                response.status,
                latency.as_micros() as u64,
            )),
            _ => None,
        })
        .collect()
}

const C: Side = Side::Client;
const S: Side = Side::Server;

#[test]
fn get_with_content_length_pairs_with_latency() {
    // "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" and a 5-byte response, as hex on the wire.
    let req = hex::decode("474554202f6120485454502f312e310d0a486f73743a20680d0a0d0a").unwrap();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let ev = decode(&[(C, 100, &req), (S, 350, resp)]);
    let r = requests(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].url.as_deref(), Some("http://h/a"));
    let p = responses(&ev);
    assert_eq!(p[0].body.as_ref(), b"hello");
    assert_eq!(p[0].body_len, 5);
    assert_eq!(p[0].request.as_ref().unwrap().path, "/a");
    assert_eq!(p[0].latency.unwrap().as_micros(), 250);
    assert_eq!(transactions(&ev), [("GET /a".into(), 200, 250)]);
    let kinds: Vec<_> = ev.iter().map(|e| e.name()).collect();
    assert_eq!(kinds, ["http_request", "http_response", "transaction"]);
}

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n";

#[test]
fn chunked_with_trailers_byte_by_byte() {
    let whole = decode(&[(C, 1, b"GET / HTTP/1.1\r\n\r\n"), (S, 2, CHUNKED)]);
    let p = responses(&whole);
    assert_eq!(p[0].body.as_ref(), b"hello world");
    assert_eq!(p[0].headers.get("x-trailer"), Some("yes"));
    let mut script: Vec<(Side, i64, &[u8])> = vec![(C, 1, b"GET / HTTP/1.1\r\n\r\n")];
    script.extend(CHUNKED.chunks(1).map(|b| (S, 2, b)));
    assert_eq!(format!("{whole:?}"), format!("{:?}", decode(&script)));
}

#[test]
fn no_body_for_head_204_304_and_1xx() {
    let ev = decode(&[
        (
            C,
            1,
            b"HEAD /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\nGET /z HTTP/1.1\r\n\r\n",
        ),
        (
            S,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n",
        ),
    ]);
    assert_eq!(
        transactions(&ev),
        [
            ("HEAD /x".into(), 200, 1),
            ("GET /y".into(), 304, 1),
            ("GET /z".into(), 204, 1)
        ]
    );
    assert!(responses(&ev)
        .iter()
        .all(|r| r.body.is_empty() && !r.body_truncated));
}

#[test]
fn pipelined_requests_in_one_read() {
    let ev = decode(&[
        (
            C,
            1,
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n",
        ),
        (
            S,
            5,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        ),
    ]);
    assert_eq!(requests(&ev)[0].body.as_ref(), b"abc");
    assert_eq!(
        transactions(&ev),
        [("POST /a".into(), 201, 4), ("GET /b".into(), 404, 4)]
    );
}

#[test]
fn expect_100_continue() {
    let ev = decode(&[
        (
            C,
            1,
            b"PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        ),
        (S, 2, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (C, 3, b"data"),
        (S, 7, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let statuses: Vec<_> = responses(&ev).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [100, 200]);
    assert_eq!(requests(&ev)[0].body.as_ref(), b"data");
    assert_eq!(transactions(&ev), [("PUT /u".into(), 200, 4)]);
}

#[test]
fn websocket_upgrade_makes_the_flow_opaque() {
    let mut d = HttpDecoder::new(1024);
    let mut out = Vec::new();
    d.feed(
        C,
        Timestamp(1),
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        &mut out,
    );
    assert!(!d.is_opaque());
    d.feed(
        S,
        Timestamp(2),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
        &mut out,
    );
    assert!(d.is_opaque());
    d.feed(C, Timestamp(3), b"GET /not-http HTTP/1.1\r\n\r\n", &mut out);
    d.finish(Timestamp(4), &mut out);
    assert_eq!(requests(&out).len(), 1);
    assert_eq!(transactions(&out), [("GET /ws".into(), 101, 1)]);
}

#[test]
fn refused_upgrade_parses_what_the_client_sent_meanwhile() {
    let ev = decode(&[
        (
            C,
            1,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        ),
        (
            S,
            2,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(
        transactions(&ev),
        [("GET /ws".into(), 400, 1), ("GET /next".into(), 200, 0)]
    );
}

#[test]
fn connect_tunnel_is_opaque_after_2xx() {
    let ev = decode(&[
        (
            C,
            1,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01",
        ),
        (
            S,
            2,
            b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03",
        ),
        (C, 3, b"\x17\x03\x03 more tls"),
    ]);
    assert_eq!(requests(&ev)[0].url, None);
    assert_eq!(
        transactions(&ev),
        [("CONNECT example.com:443".into(), 200, 1)]
    );
    assert_eq!(ev.len(), 3);
}

#[test]
fn close_delimited_body_ends_at_finish() {
    let ev = decode(&[
        (C, 1, b"GET / HTTP/1.0\r\n\r\n"),
        (S, 2, b"HTTP/1.0 200 OK\r\n\r\nall of "),
        (S, 3, b"this"),
    ]);
    let p = responses(&ev);
    assert_eq!(p[0].body.as_ref(), b"all of this");
    assert!(!p[0].body_truncated);
    assert_eq!(transactions(&ev).len(), 1);
}

#[test]
fn bodies_are_cut_at_the_limit_and_flagged() {
    let ev = decode_with(
        HttpDecoder::new(4),
        &[(
            C,
            1,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
        )],
    );
    let r = requests(&ev);
    assert_eq!(r[0].body.as_ref(), b"abcd");
    assert!(r[0].body_truncated);
    assert_eq!(r[0].body_len, 6);
}

#[test]
fn garbage_then_a_request_recovers() {
    let ev = decode(&[
        (
            C,
            1,
            b"\x00\x01\x02garbage\r\nmore junk\r\nGET /ok HTTP/1.1\r\n\r\n",
        ),
        (
            S,
            2,
            b"\xffjunkHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(transactions(&ev), [("GET /ok".into(), 200, 1)]);
}

#[test]
fn off_by_one_content_length_resyncs_on_the_next_status_line() {
    // Content-Length says 4 but 5 bytes follow; the stray byte precedes the next response.
    let ev = decode(&[
        (C, 1, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
        (
            S,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhelloHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(
        transactions(&ev),
        [("GET /1".into(), 200, 1), ("GET /2".into(), 202, 1)]
    );
    assert_eq!(responses(&ev)[0].body.as_ref(), b"hell");
}

#[test]
fn truncated_message_is_flagged_at_finish() {
    let ev = decode(&[
        (C, 1, b"GET / HTTP/1.1\r\n\r\n"),
        (S, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    ]);
    let p = responses(&ev);
    assert!(p[0].body_truncated);
    assert_eq!(p[0].body_len, 3);
}

#[test]
fn a_gap_inside_a_body_keeps_framing() {
    let mut d = HttpDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(C, Timestamp(1), b"GET / HTTP/1.1\r\n\r\n", &mut out);
    d.feed(
        S,
        Timestamp(2),
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        &mut out,
    );
    d.gap(S, 4, &mut out);
    d.feed(S, Timestamp(3), b"hij", &mut out);
    d.feed(C, Timestamp(4), b"GET /2 HTTP/1.1\r\n\r\n", &mut out);
    d.feed(
        S,
        Timestamp(5),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        &mut out,
    );
    let p = responses(&out);
    assert_eq!(
        (p[0].body.as_ref(), p[0].body_len, p[0].body_truncated),
        (&b"abchij"[..], 10, true)
    );
    assert_eq!(transactions(&out).len(), 2);
}

#[test]
fn a_gap_in_a_head_resyncs() {
    let mut d = HttpDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(C, Timestamp(1), b"GET /lost HTTP/1.1\r\nHo", &mut out);
    d.gap(C, 100, &mut out);
    d.feed(
        C,
        Timestamp(2),
        b"st: x\r\n\r\nGET /found HTTP/1.1\r\n\r\n",
        &mut out,
    );
    let r = requests(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].path, "/found");
}

#[test]
fn an_endless_header_stays_bounded() {
    let mut d = HttpDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(C, Timestamp(1), b"GET / HTTP/1.1\r\nX-Long: ", &mut out);
    let filler = vec![b'a'; 8192];
    for _ in 0..200 {
        d.feed(C, Timestamp(2), &filler, &mut out);
        assert!(d.client.buf.len() <= MAX_HEAD + filler.len());
    }
    d.feed(
        C,
        Timestamp(3),
        b"\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
        &mut out,
    );
    let r = requests(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].path, "/after");
}

#[test]
fn a_huge_chunk_size_does_not_allocate() {
    let ev = decode(&[
        (C, 1, b"GET / HTTP/1.1\r\n\r\n"),
        (
            S,
            2,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\nabc",
        ),
        (
            S,
            3,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\nabc",
        ),
    ]);
    let p = responses(&ev);
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|r| r.body_truncated));
}

#[test]
fn a_response_without_its_request_still_decodes() {
    let ev = decode(&[(S, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]);
    let p = responses(&ev);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].request, None);
    assert!(transactions(&ev).is_empty());
}

/// One generated HTTP exchange.
#[derive(Debug, Clone)]
struct Exchange {
    method: &'static str,
    path: String,
    req_body: Vec<u8>,
    req_chunked: bool,
    status: u16,
    resp_body: Vec<u8>,
    resp_chunks: Option<Vec<usize>>,
}

fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for &n in sizes.iter().chain(std::iter::once(&usize::MAX)) {
        let n = n.clamp(1, rest.len().max(1)).min(rest.len());
        if n == 0 {
            break;
        }
        out.extend(format!("{n:x}\r\n").bytes());
        out.extend(&rest[..n]);
        out.extend(b"\r\n");
        rest = &rest[n..];
    }
    out.extend(b"0\r\n\r\n");
    out
}

impl Exchange {
    fn request(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: t\r\n", self.method, self.path).into_bytes();
        if self.req_chunked {
            out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
            out.extend(chunked(&self.req_body, &[3]));
        } else {
            out.extend(format!("Content-Length: {}\r\n\r\n", self.req_body.len()).bytes());
            out.extend(&self.req_body);
        }
        out
    }

    fn response(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} X\r\n", self.status).into_bytes();
        let bodiless = self.method == "HEAD" || matches!(self.status, 204 | 304);
        match &self.resp_chunks {
            Some(sizes) if !bodiless => {
                out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                out.extend(chunked(&self.resp_body, sizes));
            }
            _ => {
                out.extend(format!("Content-Length: {}\r\n\r\n", self.resp_body.len()).bytes());
                if !bodiless {
                    out.extend(&self.resp_body);
                }
            }
        }
        out
    }
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE"]),
        "/[a-z0-9/?=&]{0,20}",
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::option::of(prop::collection::vec(1usize..50, 0..5)),
    )
        .prop_map(
            |(method, path, req_body, req_chunked, status, resp_body, resp_chunks)| Exchange {
                method,
                path,
                req_body,
                req_chunked,
                status,
                resp_body,
                resp_chunks,
            },
        )
}

/// Feeds `bytes` in pieces cut at `cuts` (positions taken modulo the length).
fn feed_split(
    d: &mut HttpDecoder,
    side: Side,
    ts: i64,
    bytes: &[u8],
    cuts: &[usize],
    out: &mut Vec<EventKind>,
) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut at = 0;
    for p in points.into_iter().chain(std::iter::once(bytes.len())) {
        d.feed(side, Timestamp(ts), &bytes[at..p.max(at)], out);
        at = p.max(at);
    }
}

proptest! {
    #[test]
    fn round_trip_split_anywhere(
        exchanges in prop::collection::vec(exchange(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let client: Vec<u8> = exchanges.iter().flat_map(|e| e.request()).collect();
        let server: Vec<u8> = exchanges.iter().flat_map(|e| e.response()).collect();
        let run = |cuts: &[usize]| {
            let mut d = HttpDecoder::new(1 << 20);
            let mut out = Vec::new();
            feed_split(&mut d, C, 1, &client, cuts, &mut out);
            feed_split(&mut d, S, 2, &server, cuts, &mut out);
            d.finish(Timestamp(3), &mut out);
            out
        };
        let whole = run(&[]);
        let split = run(&cuts);
        prop_assert_eq!(format!("{whole:?}"), format!("{split:?}"));
        let reqs = requests(&whole);
        let resps = responses(&whole);
        prop_assert_eq!(reqs.len(), exchanges.len());
        prop_assert_eq!(resps.len(), exchanges.len());
        for ((e, r), p) in exchanges.iter().zip(reqs).zip(resps) {
            prop_assert_eq!(r.method.as_str(), e.method);
            prop_assert_eq!(&r.path, &e.path);
            prop_assert_eq!(r.body.as_ref(), &e.req_body[..]);
            prop_assert_eq!(p.status, e.status);
            let bodiless = e.method == "HEAD" || matches!(e.status, 204 | 304);
            let want: &[u8] = if bodiless { &[] } else { &e.resp_body };
            prop_assert_eq!(p.body.as_ref(), want);
            prop_assert!(!p.body_truncated);
        }
        prop_assert_eq!(transactions(&whole).len(), exchanges.len());
    }

    #[test]
    fn never_panics_and_stays_bounded(
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20),
    ) {
        let mut d = HttpDecoder::new(64);
        let mut out = Vec::new();
        for (i, (client, data)) in chunks.iter().enumerate() {
            let side = if *client { C } else { S };
            if i % 7 == 6 {
                d.gap(side, data.len() as u64, &mut out);
            } else {
                d.feed(side, Timestamp(i as i64), data, &mut out);
            }
            prop_assert!(d.client.buf.len() <= 2 * MAX_HEAD && d.server.buf.len() <= 2 * MAX_HEAD);
        }
        d.finish(Timestamp(99), &mut out);
    }
}

#[test]
fn without_transaction_heads_only_the_transactions_are_lighter() {
    let script: [(Side, i64, &[u8]); 4] = [
        (
            C,
            1,
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        (S, 5, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        (S, 7, b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n"),
        (C, 9, b"POST /c HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"),
    ];
    let full = decode(&script);
    let light = decode_with(HttpDecoder::with_transaction_heads(1 << 20, false), &script);
    let kinds = |events: &[EventKind]| events.iter().map(|e| e.name()).collect::<Vec<_>>();
    assert_eq!(kinds(&light), kinds(&full));
    assert_eq!(requests(&light), requests(&full));
    assert_eq!(responses(&light), responses(&full));
    assert_eq!(transactions(&light), transactions(&full));
    assert_eq!(transactions(&light).len(), 2);
    let Some(EventKind::Transaction(Transaction::Http {
        request, response, ..
    })) = light
        .iter()
        .find(|e| matches!(e, EventKind::Transaction(_)))
    else {
        panic!("a transaction")
    };
    assert!(request.headers.is_empty() && response.headers.is_empty());
    assert_eq!(request.url.as_deref(), Some("http://h/a"));
}
