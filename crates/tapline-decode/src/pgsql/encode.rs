//! Messages the proxy writes itself: errors it answers with, the statements it sends in
//! place of one a stage failed, and messages whose fields a stage edited (only the edited
//! values are re-encoded; the rest of the message is copied from the wire).

use serde_json::Value;
use tapline_core::{Message, PgError};

use super::{be32, Reader};

/// A typed message: tag, length, body.
fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Appends `s` as a NUL-terminated string (NULs inside are dropped: they cannot be sent).
fn push_cstr(body: &mut Vec<u8>, s: &str) {
    body.extend(s.bytes().filter(|b| *b != 0));
    body.push(0);
}

/// An `ErrorResponse` with the severity (localised and not), SQLSTATE and message.
pub fn error_response(e: &PgError) -> Vec<u8> {
    let mut body = Vec::with_capacity(e.message.len() + 32);
    for (field, value) in [
        (b'S', e.severity.as_str()),
        (b'V', e.severity.as_str()),
        (b'C', e.code.as_str()),
        (b'M', e.message.as_str()),
    ] {
        body.push(field);
        push_cstr(&mut body, value);
    }
    body.push(0);
    typed(b'E', &body)
}

/// A simple `Query`.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(sql.len() + 1);
    push_cstr(&mut body, sql);
    typed(b'Q', &body)
}

/// A `Parse` of `sql` into the unnamed statement, with no parameter types.
pub fn parse_unnamed(sql: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(sql.len() + 4);
    body.push(0);
    push_cstr(&mut body, sql);
    body.extend_from_slice(&0u16.to_be_bytes());
    typed(b'P', &body)
}

/// `raw` (the message as it came) with the edits a stage made to `edited.fields` since they
/// were `before`: `sql` of `Query`/`Parse`, `tag` of `CommandComplete`, the items of `params`
/// (`Bind`) and `values` (`DataRow`). `None` when nothing that can be re-encoded changed,
/// or `raw` does not parse.
pub fn edited(raw: &[u8], before: &Value, edited: &Message) -> Option<Vec<u8>> {
    let after = &edited.fields;
    let changed = |key: &str| before.get(key) != after.get(key);
    let text = |key: &str| after.get(key).and_then(Value::as_str);
    match (edited.type_name.as_str(), raw.first()?) {
        ("Query", b'Q') if changed("sql") => Some(query(text("sql")?)),
        ("CommandComplete", b'C') if changed("tag") => {
            let mut body = Vec::new();
            push_cstr(&mut body, text("tag")?);
            Some(typed(b'C', &body))
        }
        ("Parse", b'P') if changed("sql") => {
            let mut r = Reader::new(raw.get(5..)?);
            let name = r.cstr()?;
            r.cstr()?;
            let mut body = Vec::with_capacity(raw.len());
            push_cstr(&mut body, &name);
            push_cstr(&mut body, text("sql")?);
            body.extend_from_slice(r.rest());
            Some(typed(b'P', &body))
        }
        ("Bind", b'B') if changed("params") => {
            bind(raw, before.get("params")?, after.get("params")?)
        }
        ("DataRow", b'D') if changed("values") => {
            data_row(raw, before.get("values")?, after.get("values")?)
        }
        _ => None,
    }
}

/// A `Bind` with its edited parameters re-encoded.
fn bind(raw: &[u8], before: &Value, after: &Value) -> Option<Vec<u8>> {
    let body = raw.get(5..)?;
    let mut r = Reader::new(body);
    r.cstr()?;
    r.cstr()?;
    let nfmt = r.u16()? as usize;
    let formats = (0..nfmt).map(|_| r.i16()).collect::<Option<Vec<_>>>()?;
    let head_len = body.len() - r.rest().len();
    let mut out = body[..head_len].to_vec();
    let nparams = r.u16()?;
    out.extend_from_slice(&nparams.to_be_bytes());
    for i in 0..nparams as usize {
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => *formats.get(i)?,
        };
        value(&mut r, &mut out, before.get(i), after.get(i), format)?;
    }
    out.extend_from_slice(r.rest());
    Some(typed(b'B', &out))
}

/// A `DataRow` with its edited values re-encoded (a value shown as `\x…` hex is binary).
fn data_row(raw: &[u8], before: &Value, after: &Value) -> Option<Vec<u8>> {
    let mut r = Reader::new(raw.get(5..)?);
    let n = r.u16()?;
    let mut out = n.to_be_bytes().to_vec();
    for i in 0..n as usize {
        let binary = matches!(before.get(i), Some(Value::String(s)) if s.starts_with("\\x"));
        value(
            &mut r,
            &mut out,
            before.get(i),
            after.get(i),
            i16::from(binary),
        )?;
    }
    out.extend_from_slice(r.rest());
    Some(typed(b'D', &out))
}

/// Copies one length-prefixed value from `r` to `out`, or writes its edited form instead:
/// `null` is SQL NULL, a string is text (hex-decoded when `format` is binary and it is
/// written `\x…`).
fn value(
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
    before: Option<&Value>,
    after: Option<&Value>,
    format: i16,
) -> Option<()> {
    let len = r.i32()?;
    let bytes = match usize::try_from(len) {
        Ok(n) => Some(r.bytes(n)?),
        Err(_) => None,
    };
    let new: Option<Vec<u8>> = match after {
        Some(a) if Some(a) != before => match a {
            Value::Null => None,
            Value::String(s) if format == 1 && s.starts_with("\\x") => Some(unhex(&s[2..])?),
            Value::String(s) => Some(s.as_bytes().to_vec()),
            other => Some(other.to_string().into_bytes()),
        },
        _ => {
            // Unchanged: copied as it came.
            match bytes {
                Some(b) => {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            return Some(());
        }
    };
    match new {
        Some(b) => {
            out.extend_from_slice(&i32::try_from(b.len()).ok()?.to_be_bytes());
            out.extend_from_slice(&b);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    Some(())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The total length a typed message's header announces (tag byte included).
pub fn announced_len(msg: &[u8]) -> Option<usize> {
    (msg.len() >= 5).then(|| be32(&msg[1..]) as usize + 1)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;
    use tapline_core::{Protocol, Side};

    use super::*;

    fn message(type_name: &str, fields: Value) -> Message {
        Message {
            protocol: Protocol::Postgres,
            from: Side::Client,
            type_name: type_name.into(),
            fields,
            raw: Bytes::new(),
        }
    }

    #[test]
    fn an_error_is_well_framed() {
        let e = error_response(&PgError {
            severity: "ERROR".into(),
            code: "40001".into(),
            message: "no\0 luck".into(),
        });
        assert_eq!(announced_len(&e), Some(e.len()));
        assert!(e.windows(6).any(|w| w == b"C40001"));
        assert!(e.windows(8).any(|w| w == b"Mno luck"));
        assert_eq!(e.last(), Some(&0));
    }

    #[test]
    fn edited_sql_and_values_are_re_encoded_and_the_rest_copied() {
        let q = query("select 1");
        let mut m = message("Query", json!({"sql": "select 1"}));
        assert_eq!(edited(&q, &m.fields.clone(), &m), None);
        let before = m.fields.clone();
        m.fields["sql"] = json!("select 2");
        assert_eq!(edited(&q, &before, &m), Some(query("select 2")));

        // DataRow: 3 columns, "a", NULL, "ccc"; the third edited, the second kept NULL.
        let mut body = 3u16.to_be_bytes().to_vec();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(b"a");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"ccc");
        let raw = typed(b'D', &body);
        let before = json!({"values": ["a", null, "ccc"]});
        let mut m = message("DataRow", json!({"values": ["a", null, "zz"]}));
        let out = edited(&raw, &before, &m).unwrap();
        assert_eq!(announced_len(&out), Some(out.len()));
        assert!(out.ends_with(b"\xff\xff\xff\xff\x00\x00\x00\x02zz"));
        m.fields = before.clone();
        assert_eq!(edited(&raw, &before, &m), None);
    }
}
