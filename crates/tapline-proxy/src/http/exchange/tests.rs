//! The exchange machine with scripted I/O: bytes put in its buffers, answers given to its
//! steps, and what it queues for each side read back. No sockets, no clock.

use std::net::SocketAddr;
use std::time::Duration;

use tapline_core::{FlowEnd, HttpResponse, RequestVerdict, ResponseVerdict, Timestamp};

use super::*;
use crate::http::target::Upstream;

const T0: Timestamp = Timestamp(1_000_000);

fn machine() -> Exchange {
    Exchange::new(
        Bounds {
            max_head: 8 * 1024,
            body_limit: 64,
        },
        false,
    )
}

/// What hooks and outputs want of an exchange, for [`route`].
#[derive(Clone, Copy, Default)]
struct Reads {
    requests: bool,
    responses: bool,
}

/// Answers `Step::Route` as the driver would for a forward-proxy request.
fn route(m: &mut Exchange, reads: Reads) {
    let target = Upstream::Forward
        .target(m.request_head().expect("a head to route").target())
        .unwrap();
    m.routed(
        Ok(Routed {
            target,
            addr: addr(),
            hook_requests: reads.requests,
            hook_responses: reads.responses,
            details: true,
            copy_bodies: false,
            unreachable: None,
        }),
        T0,
    );
}

fn addr() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

fn from_client(m: &mut Exchange, bytes: &[u8]) {
    m.client_in.extend_from_slice(bytes);
}

fn from_upstream(m: &mut Exchange, bytes: &[u8]) {
    m.upstream_in.extend_from_slice(bytes);
}

/// Everything queued for the client, taken.
fn to_client(m: &mut Exchange) -> String {
    drain(m.client_output())
}

/// Everything queued for the upstream, taken.
fn to_upstream(m: &mut Exchange) -> String {
    drain(m.upstream_output())
}

fn drain(queue: &mut VecDeque<Bytes>) -> String {
    let mut all = Vec::new();
    for piece in queue.drain(..) {
        all.extend_from_slice(&piece);
    }
    String::from_utf8(all).unwrap()
}

fn reads_upstream() -> Step {
    Step::Read(Wait {
        client: None,
        upstream: true,
    })
}

fn idle() -> Step {
    Step::Read(Wait {
        client: Some(Timer::Idle),
        upstream: false,
    })
}

/// Drives one plain exchange up to the request being sent: head in, routed, connected.
fn send_get(m: &mut Exchange, head: &str, reads: Reads) -> String {
    from_client(m, head.as_bytes());
    assert_eq!(m.step(T0), Step::Route);
    route(m, reads);
    if reads.requests {
        assert_eq!(m.step(T0), Step::RequestHooks);
        m.request_verdict(RequestVerdict::Continue, T0);
    }
    assert_eq!(m.step(T0), Step::Connect { fresh: false });
    m.connected(false, T0);
    assert_eq!(m.step(T0), reads_upstream());
    to_upstream(m)
}

/// A machine whose GET is with the request hooks (only requests are read).
fn at_request_hooks() -> Exchange {
    let mut m = machine();
    from_client(&mut m, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(m.step(T0), Step::Route);
    route(
        &mut m,
        Reads {
            requests: true,
            responses: false,
        },
    );
    assert_eq!(m.step(T0), Step::RequestHooks);
    m
}

#[test]
fn a_get_is_routed_sent_answered_and_reported() {
    let mut m = machine();
    assert_eq!(m.step(T0), idle());
    let sent = send_get(
        &mut m,
        "GET http://h:8080/a?b=1 HTTP/1.1\r\nHost: h:8080\r\nX-Mixed-Case: v\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
        Reads::default(),
    );
    assert_eq!(
        sent, "GET /a?b=1 HTTP/1.1\r\nHost: h:8080\r\nX-Mixed-Case: v\r\n\r\n",
        "origin form, fields as sent, hop-by-hop ones left out"
    );
    from_upstream(&mut m, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(m.step(Timestamp(T0.0 + 2500)), Step::Done);
    assert_eq!(
        to_client(&mut m),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    );
    let report = m.take_report().expect("a report");
    assert_eq!(report.request.path, "/a?b=1");
    assert_eq!(report.request.url.as_deref(), Some("http://h:8080/a?b=1"));
    assert_eq!(report.request.headers.0[1].0, "X-Mixed-Case");
    assert_eq!(report.response.status, 200);
    assert_eq!(report.response.body_len, 5);
    assert_eq!(report.response.latency, Some(Duration::from_micros(2500)));
    assert!(m.upstream_reusable());
    assert_eq!(m.step(T0), idle(), "keep-alive: the next request");
}

#[test]
fn hooks_edit_requests_and_responses_and_the_wire_keeps_the_clients_case() {
    let mut m = machine();
    from_client(
        &mut m,
        b"POST http://h/x HTTP/1.1\r\nhost: h\r\nX-Client-Case: 1\r\nContent-Length: 4\r\n\r\nbody",
    );
    assert_eq!(m.step(T0), Step::Route);
    route(
        &mut m,
        Reads {
            requests: true,
            responses: true,
        },
    );
    assert_eq!(m.step(T0), Step::RequestHooks);
    let request = m.request_mut().unwrap();
    assert_eq!(&request.body[..], b"body");
    request.headers.set("x-client-case", "2");
    request.headers.add("X-Added", "yes");
    m.request_verdict(RequestVerdict::Continue, T0);
    assert_eq!(m.step(T0), Step::Connect { fresh: false });
    m.connected(false, T0);
    assert_eq!(m.step(T0), reads_upstream());
    assert_eq!(
        to_upstream(&mut m),
        "POST /x HTTP/1.1\r\nhost: h\r\nx-client-case: 2\r\nContent-Length: 4\r\nX-Added: yes\r\n\r\nbody",
        "untouched fields keep the client's case and place, edited ones the plugin's case"
    );
    from_upstream(&mut m, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(m.step(T0), Step::ResponseHooks);
    let response = m.response_mut().unwrap();
    response.set_body("replaced");
    response.headers.add("X-Seen", "1");
    m.response_verdict(ResponseVerdict::Continue, T0);
    assert_eq!(m.step(T0), Step::Done);
    assert_eq!(
        to_client(&mut m),
        "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Seen: 1\r\n\r\nreplaced",
        "a replaced body's length takes the old length's place"
    );
    assert_eq!(m.take_report().unwrap().response.body_len, 8);
}

#[test]
fn a_plugin_answer_skips_the_upstream() {
    let mut m = at_request_hooks();
    let answer = HttpResponse::new(403, Default::default(), Bytes::from_static(b"no"));
    m.request_verdict(RequestVerdict::Respond(answer), T0);
    assert_eq!(m.step(T0), Step::Done);
    assert_eq!(
        to_client(&mut m),
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"
    );
    assert!(to_upstream(&mut m).is_empty());
    assert!(!m.upstream_reusable());
    assert_eq!(m.take_report().unwrap().response.status, 403);
}

#[test]
fn pipelined_requests_are_served_in_order() {
    let mut m = machine();
    let two =
        "GET http://h/1 HTTP/1.1\r\nHost: h\r\n\r\nGET http://h/2 HTTP/1.1\r\nHost: h\r\n\r\n";
    let sent = send_get(&mut m, two, Reads::default());
    assert!(sent.starts_with("GET /1 "), "{sent}");
    from_upstream(&mut m, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(m.step(T0), Step::Done);
    assert_eq!(m.take_report().unwrap().request.path, "/1");
    assert_eq!(m.step(T0), Step::Route, "the second is already in");
    route(&mut m, Reads::default());
    assert_eq!(m.step(T0), Step::Connect { fresh: false });
}

#[test]
fn a_reused_connection_closed_under_the_request_is_replaced_once() {
    let mut m = machine();
    from_client(&mut m, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(m.step(T0), Step::Route);
    route(&mut m, Reads::default());
    assert_eq!(m.step(T0), Step::Connect { fresh: false });
    m.connected(true, T0);
    assert_eq!(m.step(T0), reads_upstream());
    let first = to_upstream(&mut m);
    m.upstream_eof();
    assert_eq!(m.step(T0), Step::Connect { fresh: true });
    m.connected(false, T0);
    assert_eq!(m.step(T0), reads_upstream());
    assert_eq!(to_upstream(&mut m), first, "the same request again");
    m.upstream_eof();
    assert_eq!(m.step(T0), Step::Done, "a fresh connection is not retried");
    assert!(to_client(&mut m).starts_with("HTTP/1.1 502 Bad Gateway"));
}

#[test]
fn a_streaming_upload_answered_early_closes_the_connection() {
    let mut m = machine();
    from_client(
        &mut m,
        b"PUT http://h/up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    assert_eq!(m.step(T0), Step::Route);
    route(&mut m, Reads::default());
    assert_eq!(m.step(T0), Step::Connect { fresh: false });
    m.connected(false, T0);
    assert_eq!(
        m.step(T0),
        Step::Read(Wait {
            client: Some(Timer::Stall),
            upstream: true
        }),
        "the body streams while the response is awaited"
    );
    let sent = to_upstream(&mut m);
    assert!(sent.ends_with("\r\n\r\n5\r\nhello\r\n"), "{sent:?}");
    from_upstream(
        &mut m,
        b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(m.step(T0), Step::Done);
    assert!(to_client(&mut m).contains("Connection: close\r\n"));
    assert!(!m.upstream_reusable());
    assert_eq!(m.step(T0), Step::Close(FlowEnd::Fin));
}

#[test]
fn interim_responses_reach_http_1_1_clients() {
    let mut m = machine();
    let sent = send_get(
        &mut m,
        "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        Reads::default(),
    );
    assert!(!sent.is_empty());
    from_upstream(
        &mut m,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(m.step(T0), Step::Done);
    assert_eq!(
        to_client(&mut m),
        "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn http_1_0_clients_get_chunked_bodies_decoded_until_close() {
    let mut m = machine();
    send_get(&mut m, "GET http://h/ HTTP/1.0\r\n\r\n", Reads::default());
    from_upstream(
        &mut m,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(m.step(T0), Step::Done);
    assert_eq!(
        to_client(&mut m),
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"
    );
    assert_eq!(m.step(T0), Step::Close(FlowEnd::Fin));
}

#[test]
fn a_protocol_switch_hands_the_connection_over() {
    let mut m = machine();
    send_get(
        &mut m,
        "GET http://h/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        Reads::default(),
    );
    from_upstream(
        &mut m,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe",
    );
    assert_eq!(m.step(T0), Step::Switch);
    assert_eq!(
        to_client(&mut m),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    );
    assert_eq!(
        &m.upstream_in[..],
        b"frame",
        "what came after the head stays"
    );
    assert_eq!(m.take_report().unwrap().response.status, 101);
}

#[test]
fn connect_becomes_a_tunnel_with_what_followed_its_head() {
    let mut m = machine();
    from_client(
        &mut m,
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01",
    );
    assert_eq!(m.step(T0), Step::Tunnel("h:443".into()));
    assert_eq!(&m.client_in[..], b"\x16\x03\x01");
    let mut mapping = Exchange::new(
        Bounds {
            max_head: 1024,
            body_limit: 0,
        },
        true,
    );
    from_client(&mut mapping, b"CONNECT h:443 HTTP/1.1\r\n\r\n");
    assert_eq!(mapping.step(T0), Step::Close(FlowEnd::Fin));
    assert!(to_client(&mut mapping).starts_with("HTTP/1.1 405 "));
}

#[test]
fn bad_requests_are_refused_and_close() {
    for (wire, status) in [
        (
            &b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                [..],
            "400",
        ),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", "400"),
        (b"GET http://h/ HTTP/1.1\r\nX: 1\r\n", "431"),
    ] {
        let mut m = Exchange::new(
            Bounds {
                max_head: 16,
                body_limit: 0,
            },
            false,
        );
        let max = if status == "431" { 16 } else { 8 * 1024 };
        m.bounds.max_head = max;
        from_client(&mut m, wire);
        assert_eq!(m.step(T0), Step::Close(FlowEnd::Fin), "{wire:?}");
        let answer = to_client(&mut m);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(answer.contains("Connection: close"), "{answer}");
    }
}

#[test]
fn a_head_that_does_not_arrive_in_time_gets_a_408() {
    let mut m = machine();
    from_client(&mut m, b"GET http://h/ HTTP/1.1\r\nHo");
    assert_eq!(
        m.step(T0),
        Step::Read(Wait {
            client: Some(Timer::Head),
            upstream: false
        })
    );
    m.timed_out(true, Duration::from_secs(1));
    assert_eq!(m.step(T0), Step::Close(FlowEnd::Timeout));
    assert!(to_client(&mut m).starts_with("HTTP/1.1 408 "));
    // Between requests, the idle timeout closes quietly.
    let mut m = machine();
    m.timed_out(true, Duration::from_secs(1));
    assert_eq!(m.step(T0), Step::Close(FlowEnd::Timeout));
    assert!(to_client(&mut m).is_empty());
}

#[test]
fn upstream_failures_become_gateway_errors() {
    let mut m = machine();
    send_get(
        &mut m,
        "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        Reads::default(),
    );
    m.timed_out(false, Duration::from_secs(2));
    assert_eq!(m.step(T0), Step::Done);
    let answer = to_client(&mut m);
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(answer.contains("sent no response within 2s"), "{answer}");
    assert_eq!(m.take_report().unwrap().response.status, 504);

    let mut m = machine();
    send_get(
        &mut m,
        "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        Reads::default(),
    );
    from_upstream(&mut m, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
    assert_eq!(m.step(T0), Step::Done);
    assert!(to_client(&mut m).starts_with("HTTP/1.1 502 "));
}

#[test]
fn a_long_body_is_reported_as_far_as_it_went_when_the_run_is_forced_to_stop() {
    let mut m = machine();
    send_get(
        &mut m,
        "GET http://h/big HTTP/1.1\r\nHost: h\r\n\r\n",
        Reads::default(),
    );
    from_upstream(
        &mut m,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
    );
    assert_eq!(m.step(T0), reads_upstream());
    let report = m.interrupted().expect("a report of the cut exchange");
    assert_eq!(report.response.body_len, 10);
    assert_eq!(report.request.path, "/big");
}

#[test]
fn a_hook_that_closes_ends_the_connection_without_an_answer() {
    let mut m = at_request_hooks();
    m.request_verdict(RequestVerdict::Close("plugin said so".into()), T0);
    assert_eq!(m.step(T0), Step::Done);
    assert!(m.take_report().is_none());
    assert_eq!(
        m.step(T0),
        Step::Close(FlowEnd::ClosedByPlugin("plugin said so".into()))
    );
    assert!(to_client(&mut m).is_empty());
}
