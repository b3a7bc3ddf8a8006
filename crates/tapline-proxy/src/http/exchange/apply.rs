//! What goes on the wire for an exchange: heads for the next hop, written from the heads as
//! received when no hook read them, or from what the hooks left when one did. Hook edits
//! are checked: an invalid method, path, status or field is dropped with a warning and the
//! original kept. Fields keep their order and case (an edited one the case the hook wrote);
//! a body goes on in its own framing unless a hook changed it or its framing fields, and is
//! then framed by its length, the `Content-Length` taking the first framing field's place.

use bytes::{Buf, BytesMut};
use tapline_core::http::reason_phrase;
use tapline_core::HttpRequest;
use tapline_decode::http1::write::{
    framing_fields, is_token, valid_fields, write_field, write_fields, write_fields_reframed,
    write_request_line, write_status_line, FramingFields,
};
use tapline_decode::http1::{BodyReader, Fields, Framing, RequestHead, ResponseHead};

use super::request::Ex;
use crate::http::target::{is_origin_form, Target};

/// The request as hooks and outputs see it, body not read yet: `path` in origin form, the
/// absolute URL, fields as the client sent them with `Host` first when it sent none.
pub(super) fn request_view(head: &RequestHead, target: &Target) -> HttpRequest {
    let mut request = head.to_request(&target.path, Some(target.url()));
    if request.headers.get("host").is_none() {
        request
            .headers
            .0
            .insert(0, ("Host".into(), target.authority.as_str().into()));
    }
    request
}

/// The head for the upstream when no hook reads requests (fields as received, hop-by-hop
/// ones left out), followed by the body bytes already read: a small body usually came with
/// the head, and one write sends both. Bad framing shows when the body is pumped.
pub(super) fn plain_request(ex: &mut Ex, client_in: &mut BytesMut) -> Vec<u8> {
    let head = &ex.head;
    let target = &ex.routed().target;
    let mut out = Vec::with_capacity(head.size() + 64);
    write_request_line(
        &mut out,
        head.method().as_bytes(),
        target.path.as_bytes(),
        b"HTTP/1.1",
    );
    request_fields(
        &mut out,
        head.fields().iter(),
        target,
        Framed::As(FramingFields::Keep),
        head.upgrade(),
    );
    out.extend_from_slice(b"\r\n");
    let copies = &mut ex.copies;
    if let Ok(n) = ex.req_body.take(client_in, |p| copies.keep_request(p)) {
        out.extend_from_slice(&client_in[..n]);
        client_in.advance(n);
    }
    out
}

/// The head (and body) for the upstream after the request hooks.
pub(super) fn edited_request(ex: &mut Ex) -> Vec<u8> {
    let target = &ex.routed.as_ref().expect("routed").target;
    let req = &mut ex.request;
    if req.method != ex.head.method() && !is_token(&req.method) {
        tracing::warn!("ignoring invalid method {:?} set by a plugin", req.method);
        req.method = ex.head.method().to_string();
    }
    if req.path != target.path && !is_origin_form(&req.path) {
        tracing::warn!("ignoring invalid path {:?} set by a plugin", req.path);
        req.path = target.path.clone();
    }
    let mut out = Vec::with_capacity(ex.head.size() + req.body.len() + 64);
    write_request_line(
        &mut out,
        req.method.as_bytes(),
        req.path.as_bytes(),
        b"HTTP/1.1",
    );
    let valid = valid_fields(&req.headers);
    let answered_continue = ex.answered_continue;
    let fields = valid
        .iter()
        .copied()
        .filter(|(n, _)| !(answered_continue && n.eq_ignore_ascii_case(b"expect")));
    let upgrade = ex.head.upgrade();
    let reframed = req.body != ex.seen_body
        || !framing_fields(valid.iter().copied()).eq(framing_fields(ex.head.fields().iter()));
    if reframed {
        // A body (or framing) a hook changed: framed by its length. A request that came
        // without a body (a GET) does not gain a `Content-Length: 0`.
        let framed = framing_fields(ex.head.fields().iter()).next().is_some();
        let len = (framed || !req.body.is_empty()).then_some(req.body.len() as u64);
        request_fields(&mut out, fields, target, Framed::Length(len), upgrade);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&req.body);
        req.body_len = req.body.len() as u64;
        if !ex.buffered.complete {
            // The rest of the replaced body is never read: the connection cannot go on.
            ex.keep_client = false;
            ex.req_body = BodyReader::new(Framing::Empty);
        }
    } else {
        // Unchanged: relayed as framed; past the limit, the rest streams on.
        request_fields(
            &mut out,
            fields,
            target,
            Framed::As(FramingFields::Keep),
            upgrade,
        );
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&ex.buffered.framed);
    }
    out
}

/// How a head's framing fields are written.
enum Framed {
    /// As received, these kept.
    As(FramingFields),
    /// Replaced by a `Content-Length` of this length (none: no length at all).
    Length(Option<u64>),
}

/// A request's fields for the upstream: `Host` first (the mapping's, or the URL's when the
/// client sent none), then the rest as given, without hop-by-hop fields; `Upgrade` asked of
/// the upstream on the client's behalf.
fn request_fields<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    target: &Target,
    framing: Framed,
    upgrade: Option<&[u8]>,
) {
    let has_host = fields.clone().any(|(n, _)| n.eq_ignore_ascii_case(b"host"));
    if target.fixed || !has_host {
        write_field(out, b"Host", target.authority.as_bytes());
    }
    let fixed = target.fixed;
    let fields = fields.filter(move |(n, _)| !(fixed && n.eq_ignore_ascii_case(b"host")));
    match framing {
        Framed::As(kept) => write_fields(out, fields, kept),
        Framed::Length(len) => write_fields_reframed(out, fields, len),
    }
    if let Some(protocols) = upgrade {
        write_upgrade(out, protocols);
    }
}

/// `Upgrade` and the `Connection` option that goes with it (both hop-by-hop, so written
/// for each hop).
fn write_upgrade(out: &mut Vec<u8>, protocols: &[u8]) {
    write_field(out, b"Upgrade", protocols);
    write_field(out, b"Connection", b"upgrade");
}

/// An interim (1xx) response for the client, as received.
pub(super) fn interim(head: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.size());
    write_status_line(&mut out, b"HTTP/1.1", head.status(), head.reason());
    write_fields(&mut out, head.fields().iter(), FramingFields::Keep);
    out.extend_from_slice(b"\r\n");
    out
}

/// The upstream's `101 Switching Protocols` for the client.
pub(super) fn switched(head: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.size() + 64);
    write_status_line(&mut out, b"HTTP/1.1", head.status(), head.reason());
    write_fields(&mut out, head.fields().iter(), FramingFields::Keep);
    if let Some(protocols) = head.fields().get(b"upgrade") {
        write_upgrade(&mut out, protocols);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A response head for the client when no hook reads responses, up to (not including) its
/// `Connection` field and the blank line.
pub(super) fn relayed_response_head(head: &ResponseHead, decode: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.size() + 64);
    write_status_line(&mut out, b"HTTP/1.1", head.status(), head.reason());
    write_fields(
        &mut out,
        head.fields().iter(),
        relayed_framing(head.fields(), decode),
    );
    out
}

/// The response head for the client after the response hooks, up to its `Connection`
/// field; true when the body is sent whole after it, framed by its length (a hook changed
/// it or its framing fields), false when the body is relayed in its own framing.
pub(super) fn edited_response_head(ex: &mut Ex) -> (Vec<u8>, bool) {
    let head = ex
        .resp_head
        .take()
        .expect("a response with the hooks has its head");
    let response = &mut ex.response;
    if response.status != head.status() && !(100..=999).contains(&response.status) {
        tracing::warn!(
            "ignoring invalid status {} set by a plugin",
            response.status
        );
        response.status = head.status();
    }
    let mut out = Vec::with_capacity(head.size() + 64);
    if response.status == head.status() {
        write_status_line(&mut out, b"HTTP/1.1", response.status, head.reason());
    } else {
        let reason = reason_phrase(response.status).as_bytes();
        write_status_line(&mut out, b"HTTP/1.1", response.status, reason);
    }
    let valid = valid_fields(&response.headers);
    let whole = response.body != ex.seen_body
        || !framing_fields(valid.iter().copied()).eq(framing_fields(head.fields().iter()));
    if whole {
        let head_request = ex.head.method() == "HEAD";
        let bodiless =
            head_request || ex.resp_framing == Framing::Empty && response.body.is_empty();
        let len = (!bodiless).then_some(response.body.len() as u64);
        write_fields_reframed(&mut out, valid.iter().copied(), len);
    } else {
        let kept = relayed_framing(head.fields(), ex.decode);
        write_fields(&mut out, valid.iter().copied(), kept);
    }
    (out, whole)
}

/// Which framing fields a relayed response keeps: `Transfer-Encoding` wins over
/// `Content-Length`; a decoded body has neither.
fn relayed_framing(fields: &Fields<bytes::Bytes>, decode: bool) -> FramingFields {
    if decode {
        FramingFields::Drop
    } else if fields.get(b"transfer-encoding").is_some() {
        FramingFields::DropLength
    } else {
        FramingFields::Keep
    }
}
