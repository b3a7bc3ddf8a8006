//! Between tapline's events and verdicts and the plugin protocol's messages.

use bytes::Bytes;
use tapline_core::http::reason_phrase;
use tapline_core::{
    Chunk, ChunkVerdict, Flow, Headers, HttpRequest, HttpResponse, RequestVerdict, ResponseVerdict,
    Side,
};

use crate::error::GrpcError;
use crate::proto::{self, process_http_request_response, process_http_response_response};
use crate::proto::{process_tunnel_data_request, process_tunnel_data_response};

/// The request as a plugin sees it: origin-form path, headers in order with `Host` (taken
/// from the absolute URL when the client sent none), the kept body.
pub(crate) fn request_message(request: &HttpRequest) -> proto::HttpRequest {
    let mut headers = header_messages(&request.headers);
    if request.headers.get("host").is_none() {
        if let Some(authority) = request.url.as_deref().and_then(url_authority) {
            headers.insert(
                0,
                proto::HttpHeader {
                    name: "Host".into(),
                    value: authority,
                },
            );
        }
    }
    proto::HttpRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        headers,
        body: request.body.clone(),
    }
}

/// The response as a plugin sees it.
pub(crate) fn response_message(response: &HttpResponse) -> proto::HttpResponse {
    proto::HttpResponse {
        status_code: u32::from(response.status),
        headers: header_messages(&response.headers),
        body: response.body.clone(),
    }
}

/// Applies a plugin's `ProcessHttpRequest` answer to `request` (which was sent as `sent`).
/// `CONTINUE` edits what `modified_request` changed; `ABORT` answers with `abort_response`.
/// Nothing is changed when the answer is unusable.
pub(crate) fn request_verdict(
    answer: proto::ProcessHttpRequestResponse,
    request: &mut HttpRequest,
    sent: &proto::HttpRequest,
) -> Result<RequestVerdict, GrpcError> {
    use process_http_request_response::Action;
    const RPC: &str = "ProcessHttpRequest";
    match Action::try_from(answer.action) {
        Ok(Action::Continue) => {
            if let Some(modified) = answer.modified_request {
                apply_request(request, sent, modified);
            }
            Ok(RequestVerdict::Continue)
        }
        Ok(Action::Abort) => Ok(RequestVerdict::Respond(abort_response(
            RPC,
            answer.abort_response,
        )?)),
        Err(_) => Err(unknown_action(RPC, answer.action)),
    }
}

/// Applies a plugin's `ProcessHttpResponse` answer to `response` (sent as `sent`).
pub(crate) fn response_verdict(
    answer: proto::ProcessHttpResponseResponse,
    response: &mut HttpResponse,
    sent: &proto::HttpResponse,
) -> Result<ResponseVerdict, GrpcError> {
    use process_http_response_response::Action;
    const RPC: &str = "ProcessHttpResponse";
    match Action::try_from(answer.action) {
        Ok(Action::Continue) => {
            if let Some(modified) = answer.modified_response {
                if modified.status_code != 0 {
                    valid_status(RPC, modified.status_code)?;
                }
                apply_response(response, sent, modified);
            }
            Ok(ResponseVerdict::Continue)
        }
        Ok(Action::Abort) => {
            let mut replacement = abort_response(RPC, answer.abort_response)?;
            replacement.request = response.request.clone();
            replacement.latency = response.latency;
            Ok(ResponseVerdict::Replace(replacement))
        }
        Err(_) => Err(unknown_action(RPC, answer.action)),
    }
}

/// The `ProcessTunnelData` call for `chunk` of `flow`, for a plugin on the `leg` side:
/// `INGRESS` for bytes the proxy read from that leg's peer, `EGRESS` for bytes it writes to it.
pub(crate) fn tunnel_message(
    flow: &Flow,
    chunk: &Chunk,
    leg: Side,
) -> proto::ProcessTunnelDataRequest {
    use process_tunnel_data_request::{Direction, Side as Leg};
    let side = match leg {
        Side::Client => Leg::Client,
        Side::Server => Leg::Server,
    };
    let direction = if chunk.from == leg {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    proto::ProcessTunnelDataRequest {
        // The flow's UUID, as fault sends it (its example plugins parse it as one).
        id: flow.uid.to_string(),
        side: side.into(),
        direction: direction.into(),
        chunk: chunk.data.clone(),
    }
}

/// What to do with a chunk (`original`) after the plugin `plugin` answered.
pub(crate) fn chunk_verdict(
    answer: proto::ProcessTunnelDataResponse,
    original: &Bytes,
    plugin: &str,
) -> Result<ChunkVerdict, GrpcError> {
    use process_tunnel_data_response::Action;
    let forward = |bytes: Bytes| {
        if bytes == *original {
            ChunkVerdict::Pass
        } else {
            ChunkVerdict::Replace(bytes)
        }
    };
    match answer.action {
        Some(Action::PassThrough(p)) if p.chunk.is_empty() => Ok(ChunkVerdict::Pass),
        Some(Action::PassThrough(p)) => Ok(forward(p.chunk)),
        Some(Action::Replace(r)) => Ok(forward(r.modified_chunk)),
        Some(Action::Buffer(_)) => Ok(ChunkVerdict::Hold),
        Some(Action::Close(c)) if c.reason.is_empty() => Ok(ChunkVerdict::Close(format!(
            "closed by gRPC plugin {plugin}"
        ))),
        Some(Action::Close(c)) => Ok(ChunkVerdict::Close(c.reason)),
        None => Err(GrpcError::BadAnswer {
            rpc: "ProcessTunnelData",
            what: "no action".into(),
        }),
    }
}

fn header_messages(headers: &Headers) -> Vec<proto::HttpHeader> {
    headers
        .iter()
        .map(|(name, value)| proto::HttpHeader {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect()
}

fn headers_from(messages: Vec<proto::HttpHeader>) -> Headers {
    messages.into_iter().map(|h| (h.name, h.value)).collect()
}

/// Empty fields mean "unchanged" (proto3 cannot tell unset from empty), and so do fields
/// equal to what was sent, so a plugin echoing the request back changes nothing.
fn apply_request(
    request: &mut HttpRequest,
    sent: &proto::HttpRequest,
    modified: proto::HttpRequest,
) {
    if !modified.method.is_empty() && modified.method != sent.method {
        request.method = modified.method;
    }
    if !modified.path.is_empty() && modified.path != sent.path {
        if let Some(url) = request.url.as_mut() {
            if let Some(origin) = url_origin(url) {
                *url = format!("{origin}{}", modified.path);
            }
        }
        request.path = modified.path;
    }
    if !modified.headers.is_empty() && modified.headers != sent.headers {
        request.headers = headers_from(modified.headers);
    }
    if !modified.body.is_empty() && modified.body != sent.body {
        request.set_body(modified.body);
    }
}

fn apply_response(
    response: &mut HttpResponse,
    sent: &proto::HttpResponse,
    modified: proto::HttpResponse,
) {
    if modified.status_code != 0 && modified.status_code != sent.status_code {
        // Checked by the caller to fit 100..=999.
        response.status = modified.status_code as u16;
        response.reason = reason_phrase(response.status).to_string();
    }
    if !modified.headers.is_empty() && modified.headers != sent.headers {
        response.headers = headers_from(modified.headers);
    }
    if !modified.body.is_empty() && modified.body != sent.body {
        response.set_body(modified.body);
    }
}

fn abort_response(
    rpc: &'static str,
    message: Option<proto::HttpResponse>,
) -> Result<HttpResponse, GrpcError> {
    let message = message.ok_or_else(|| GrpcError::BadAnswer {
        rpc,
        what: "ABORT without abort_response".into(),
    })?;
    let status = valid_status(rpc, message.status_code)?;
    Ok(HttpResponse::new(
        status,
        headers_from(message.headers),
        message.body,
    ))
}

fn valid_status(rpc: &'static str, status: u32) -> Result<u16, GrpcError> {
    match u16::try_from(status) {
        Ok(s) if (100..=999).contains(&s) => Ok(s),
        _ => Err(GrpcError::BadAnswer {
            rpc,
            what: format!("status code {status}"),
        }),
    }
}

fn unknown_action(rpc: &'static str, action: i32) -> GrpcError {
    GrpcError::BadAnswer {
        rpc,
        what: format!("unknown action {action}"),
    }
}

/// `scheme://authority` of an absolute URL.
fn url_origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

fn url_authority(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(uri.authority()?.to_string())
}

#[cfg(test)]
mod tests {
    use tapline_core::{FlowId, Mode, Protocol, Route, Timestamp};

    use super::*;
    use crate::proto::{Buffer, Close, PassThrough, Replace};

    fn request() -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: "/a?x=1".into(),
            url: Some("http://127.0.0.1:7070/a?x=1".into()),
            version: "HTTP/1.1".into(),
            headers: [("Host", "127.0.0.1:7070"), ("Accept", "*/*")]
                .into_iter()
                .collect(),
            body: Bytes::from_static(b"hi"),
            body_truncated: false,
            body_len: 2,
        }
    }

    fn header(name: &str, value: &str) -> proto::HttpHeader {
        proto::HttpHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn request_message_keeps_order_and_adds_a_missing_host() {
        let m = request_message(&request());
        assert_eq!(m.path, "/a?x=1");
        assert_eq!(m.headers[0], header("Host", "127.0.0.1:7070"));
        let mut no_host = request();
        no_host.headers.remove("host");
        let m = request_message(&no_host);
        assert_eq!(
            m.headers,
            [header("Host", "127.0.0.1:7070"), header("Accept", "*/*")]
        );
    }

    #[test]
    fn an_echoed_request_changes_nothing() {
        let mut req = request();
        let sent = request_message(&req);
        let answer = proto::ProcessHttpRequestResponse {
            action: 0,
            modified_request: Some(sent.clone()),
            abort_response: None,
        };
        assert_eq!(
            request_verdict(answer, &mut req, &sent).unwrap(),
            RequestVerdict::Continue
        );
        assert_eq!(req, request());
    }

    #[test]
    fn a_modified_request_is_applied_field_by_field() {
        let mut req = request();
        let sent = request_message(&req);
        let answer = proto::ProcessHttpRequestResponse {
            action: 0,
            modified_request: Some(proto::HttpRequest {
                method: String::new(),
                path: "/echo?rewritten=yes".into(),
                headers: vec![header("Host", "127.0.0.1:7070"), header("X-Plugin", "1")],
                body: Bytes::new(),
            }),
            abort_response: None,
        };
        request_verdict(answer, &mut req, &sent).unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/echo?rewritten=yes");
        assert_eq!(
            req.url.as_deref(),
            Some("http://127.0.0.1:7070/echo?rewritten=yes")
        );
        assert_eq!(req.headers.get("x-plugin"), Some("1"));
        assert_eq!(req.body, Bytes::from_static(b"hi"));
    }

    #[test]
    fn abort_answers_and_bad_aborts_are_errors() {
        let mut req = request();
        let sent = request_message(&req);
        let teapot = proto::ProcessHttpRequestResponse {
            action: 1,
            modified_request: None,
            abort_response: Some(proto::HttpResponse {
                status_code: 418,
                headers: vec![header("X-Why", "tea")],
                body: Bytes::from_static(b"short and stout"),
            }),
        };
        let RequestVerdict::Respond(r) = request_verdict(teapot, &mut req, &sent).unwrap() else {
            panic!("not a response");
        };
        assert_eq!((r.status, r.reason.as_str()), (418, "I'm a teapot"));
        assert_eq!(r.body_len, 15);
        for bad in [
            proto::ProcessHttpRequestResponse {
                action: 1,
                modified_request: None,
                abort_response: None,
            },
            proto::ProcessHttpRequestResponse {
                action: 1,
                modified_request: None,
                abort_response: Some(proto::HttpResponse::default()),
            },
            proto::ProcessHttpRequestResponse {
                action: 9,
                modified_request: None,
                abort_response: None,
            },
        ] {
            assert!(request_verdict(bad, &mut req, &sent).is_err());
        }
        assert_eq!(req, request());
    }

    #[test]
    fn responses_are_modified_or_replaced() {
        let mut resp = HttpResponse::new(
            200,
            [("Content-Type", "text/plain")].into_iter().collect(),
            Bytes::from_static(b"ok"),
        );
        let sent = response_message(&resp);
        let modified = proto::ProcessHttpResponseResponse {
            action: 0,
            modified_response: Some(proto::HttpResponse {
                status_code: 503,
                headers: vec![],
                body: Bytes::from_static(b"down"),
            }),
            abort_response: None,
        };
        assert_eq!(
            response_verdict(modified, &mut resp, &sent).unwrap(),
            ResponseVerdict::Continue
        );
        assert_eq!(
            (resp.status, resp.reason.as_str(), &resp.body[..]),
            (503, "Service Unavailable", &b"down"[..])
        );
        assert_eq!(resp.headers.get("content-type"), Some("text/plain"));
        let replaced = proto::ProcessHttpResponseResponse {
            action: 1,
            modified_response: None,
            abort_response: Some(proto::HttpResponse {
                status_code: 500,
                headers: vec![],
                body: Bytes::new(),
            }),
        };
        assert!(matches!(
            response_verdict(replaced, &mut resp, &sent).unwrap(),
            ResponseVerdict::Replace(r) if r.status == 500
        ));
    }

    #[test]
    fn tunnel_direction_is_relative_to_the_declared_leg() {
        use process_tunnel_data_request::Direction;
        let flow = Flow {
            id: FlowId(42),
            uid: tapline_core::FlowUid::random(),
            mode: Mode::Proxy,
            protocol: Protocol::Tcp,
            route: Route::Mapping,
            client: "127.0.0.1:1".parse().unwrap(),
            server: "127.0.0.1:2".parse().unwrap(),
            started: Timestamp(0),
            tls: None,
        };
        let up = Chunk {
            from: Side::Client,
            data: Bytes::from_static(b"q"),
        };
        let down = Chunk {
            from: Side::Server,
            data: Bytes::from_static(b"a"),
        };
        let m = tunnel_message(&flow, &up, Side::Client);
        assert_eq!(
            m.id,
            flow.uid.to_string(),
            "the flow's UUID, as fault sends it"
        );
        assert_eq!(m.direction(), Direction::Ingress);
        assert_eq!(
            tunnel_message(&flow, &down, Side::Client).direction(),
            Direction::Egress
        );
        assert_eq!(
            tunnel_message(&flow, &up, Side::Server).direction(),
            Direction::Egress
        );
        assert_eq!(
            tunnel_message(&flow, &down, Side::Server).direction(),
            Direction::Ingress
        );
    }

    #[test]
    fn tunnel_answers_map_to_chunk_verdicts() {
        use process_tunnel_data_response::Action;
        let original = Bytes::from_static(b"abc");
        let verdict =
            |action| chunk_verdict(proto::ProcessTunnelDataResponse { action }, &original, "p");
        let pass = |chunk: &'static [u8]| {
            Some(Action::PassThrough(PassThrough {
                chunk: Bytes::from_static(chunk),
            }))
        };
        assert_eq!(verdict(pass(b"")).unwrap(), ChunkVerdict::Pass);
        assert_eq!(verdict(pass(b"abc")).unwrap(), ChunkVerdict::Pass);
        assert_eq!(
            verdict(pass(b"xyzabc")).unwrap(),
            ChunkVerdict::Replace(Bytes::from_static(b"xyzabc"))
        );
        assert_eq!(
            verdict(Some(Action::Replace(Replace {
                modified_chunk: Bytes::from_static(b"ABC")
            })))
            .unwrap(),
            ChunkVerdict::Replace(Bytes::from_static(b"ABC"))
        );
        assert_eq!(
            verdict(Some(Action::Buffer(Buffer {
                estimated_time_to_release_ms: 5
            })))
            .unwrap(),
            ChunkVerdict::Hold
        );
        assert_eq!(
            verdict(Some(Action::Close(Close {
                reason: "bye".into()
            })))
            .unwrap(),
            ChunkVerdict::Close("bye".into())
        );
        assert!(verdict(None).is_err());
    }
}
