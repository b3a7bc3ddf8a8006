//! Backend (server → client) messages, parsed by postgres-protocol's
//! `message::backend::Message::parse` once tapline has framed a complete message (so its
//! buffer reservations never see an untrusted length). The few backend messages it does not
//! know (CopyBothResponse, NegotiateProtocolVersion, FunctionCallResponse) are decoded by
//! hand here.

use std::cell::RefCell;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message as Be;
use serde_json::{json, Map, Value};

use super::{fields_if, value_text, Reader};

/// A backend message decoded: its wire name, fields, and what it means for the session.
pub(crate) struct Backend {
    pub name: &'static str,
    pub fields: Value,
    pub effect: Effect,
}

/// What a backend message tells the connection's tracker.
pub(crate) enum Effect {
    None,
    /// An Authentication request with this code.
    Auth(i32),
    /// RowDescription: the columns' formats (0 text, 1 binary).
    Columns(Vec<i16>),
    DataRow,
    Complete(String),
    Error {
        code: String,
        message: String,
    },
    Ready,
}

/// Decodes one complete backend message (`msg` includes the tag and length). `formats` are
/// the column formats of the last RowDescription, used to show binary DataRow values in hex.
/// Without `detail`, the frequent messages' fields are left `null` (not built).
pub(crate) fn decode(msg: &[u8], formats: &[i16], detail: bool) -> Backend {
    PARSE_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.extend_from_slice(msg);
        let decoded = parse(&mut buf, msg, formats, detail);
        if msg.len() > PARSE_BUF_KEEP {
            *buf = BytesMut::new();
        }
        decoded
    })
}

thread_local! {
    /// The buffer postgres-protocol parses from (it wants a `BytesMut`), reused so that
    /// decoding a message allocates nothing for it; one per thread, not per connection.
    static PARSE_BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Largest message whose room [`PARSE_BUF`] keeps for the next one.
const PARSE_BUF_KEEP: usize = 64 * 1024;

/// Parses `msg`, copied into `buf`.
fn parse(buf: &mut BytesMut, msg: &[u8], formats: &[i16], detail: bool) -> Backend {
    let tag = msg.first().copied().unwrap_or(0);
    match Be::parse(buf) {
        Ok(Some(m)) => from_parsed(m, formats, detail).unwrap_or_else(|e| malformed(tag, &e)),
        Ok(None) => malformed(tag, "incomplete"),
        Err(e) => by_hand(tag, msg.get(5..).unwrap_or_default())
            .unwrap_or_else(|| malformed(tag, &e.to_string())),
    }
}

fn malformed(tag: u8, why: &str) -> Backend {
    Backend {
        name: tag_name(tag),
        fields: json!({ "malformed": why }),
        effect: Effect::None,
    }
}

fn plain(name: &'static str, fields: Value) -> Result<Backend, String> {
    Ok(Backend {
        name,
        fields,
        effect: Effect::None,
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn from_parsed(m: Be, formats: &[i16], detail: bool) -> Result<Backend, String> {
    let e = |e: std::io::Error| e.to_string();
    let auth = |name, code: i32, fields: Value| {
        Ok(Backend {
            name,
            fields,
            effect: Effect::Auth(code),
        })
    };
    match m {
        Be::AuthenticationOk => auth("AuthenticationOk", 0, json!({})),
        Be::AuthenticationKerberosV5 => auth("AuthenticationKerberosV5", 2, json!({})),
        Be::AuthenticationCleartextPassword => {
            auth("AuthenticationCleartextPassword", 3, json!({}))
        }
        Be::AuthenticationMd5Password(b) => {
            let salt: String = b.salt().iter().map(|x| format!("{x:02x}")).collect();
            auth("AuthenticationMD5Password", 5, json!({ "salt": salt }))
        }
        Be::AuthenticationScmCredential => auth("AuthenticationSCMCredential", 6, json!({})),
        Be::AuthenticationGss => auth("AuthenticationGSS", 7, json!({})),
        Be::AuthenticationGssContinue(b) => auth(
            "AuthenticationGSSContinue",
            8,
            json!({ "length": b.data().len() }),
        ),
        Be::AuthenticationSspi => auth("AuthenticationSSPI", 9, json!({})),
        Be::AuthenticationSasl(b) => {
            let mechanisms: Vec<String> = b
                .mechanisms()
                .map(|m| Ok(m.to_string()))
                .collect()
                .map_err(e)?;
            auth(
                "AuthenticationSASL",
                10,
                json!({ "mechanisms": mechanisms }),
            )
        }
        Be::AuthenticationSaslContinue(b) => auth(
            "AuthenticationSASLContinue",
            11,
            json!({ "length": b.data().len() }),
        ),
        Be::AuthenticationSaslFinal(b) => auth(
            "AuthenticationSASLFinal",
            12,
            json!({ "length": b.data().len() }),
        ),
        Be::BackendKeyData(b) => plain(
            "BackendKeyData",
            json!({ "process_id": b.process_id(), "secret_key": b.secret_key() }),
        ),
        Be::ParameterStatus(b) => plain(
            "ParameterStatus",
            json!({ "name": b.name().map_err(e)?, "value": b.value().map_err(e)? }),
        ),
        Be::RowDescription(b) => {
            let mut columns = Vec::new();
            let mut formats = Vec::new();
            let mut fields = b.fields();
            while let Some(f) = fields.next().map_err(e)? {
                formats.push(f.format());
                if !detail {
                    continue;
                }
                columns.push(json!({
                    "name": f.name(),
                    "table_oid": f.table_oid(),
                    "column": f.column_id(),
                    "type_oid": f.type_oid(),
                    "type_size": f.type_size(),
                    "type_modifier": f.type_modifier(),
                    "format": f.format(),
                }));
            }
            Ok(Backend {
                name: "RowDescription",
                fields: fields_if(detail, || json!({ "columns": columns })),
                effect: Effect::Columns(formats),
            })
        }
        Be::DataRow(b) => {
            let mut values = Vec::new();
            let mut ranges = b.ranges();
            let buf = b.buffer();
            while let Some(r) = ranges.next().map_err(e)? {
                if !detail {
                    continue;
                }
                let format = formats.get(values.len()).copied().unwrap_or(0);
                values.push(match r.and_then(|r| buf.get(r)) {
                    Some(v) => Value::String(value_text(v, format)),
                    None => Value::Null,
                });
            }
            Ok(Backend {
                name: "DataRow",
                fields: fields_if(detail, || json!({ "values": values })),
                effect: Effect::DataRow,
            })
        }
        Be::CommandComplete(b) => {
            let tag = b.tag().map_err(e)?.to_string();
            Ok(Backend {
                name: "CommandComplete",
                fields: fields_if(detail, || json!({ "tag": tag })),
                effect: Effect::Complete(tag),
            })
        }
        Be::EmptyQueryResponse => Ok(Backend {
            name: "EmptyQueryResponse",
            fields: json!({}),
            effect: Effect::Complete(String::new()),
        }),
        Be::PortalSuspended => Ok(Backend {
            name: "PortalSuspended",
            fields: json!({}),
            effect: Effect::Complete(String::new()),
        }),
        Be::ErrorResponse(b) => {
            let fields = notice_fields(b.fields()).map_err(e)?;
            let get = |k: &str| {
                fields
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let effect = Effect::Error {
                code: get("code"),
                message: get("message"),
            };
            Ok(Backend {
                name: "ErrorResponse",
                fields: Value::Object(fields),
                effect,
            })
        }
        Be::NoticeResponse(b) => plain(
            "NoticeResponse",
            Value::Object(notice_fields(b.fields()).map_err(e)?),
        ),
        Be::ReadyForQuery(b) => Ok(Backend {
            name: "ReadyForQuery",
            fields: fields_if(
                detail,
                || json!({ "status": (b.status() as char).to_string() }),
            ),
            effect: Effect::Ready,
        }),
        Be::ParameterDescription(b) => {
            let types: Vec<u32> = b.parameters().collect().map_err(e)?;
            plain("ParameterDescription", json!({ "types": types }))
        }
        Be::NoData => plain("NoData", json!({})),
        Be::ParseComplete => plain("ParseComplete", json!({})),
        Be::BindComplete => plain("BindComplete", json!({})),
        Be::CloseComplete => plain("CloseComplete", json!({})),
        Be::CopyInResponse(b) => {
            let formats: Vec<u16> = b.column_formats().collect().map_err(e)?;
            plain(
                "CopyInResponse",
                json!({ "format": b.format(), "column_formats": formats }),
            )
        }
        Be::CopyOutResponse(b) => {
            let formats: Vec<u16> = b.column_formats().collect().map_err(e)?;
            plain(
                "CopyOutResponse",
                json!({ "format": b.format(), "column_formats": formats }),
            )
        }
        Be::CopyData(b) => plain("CopyData", json!({ "length": b.data().len() })),
        Be::CopyDone => plain("CopyDone", json!({})),
        Be::NotificationResponse(b) => plain(
            "NotificationResponse",
            json!({
                "process_id": b.process_id(),
                "channel": b.channel().map_err(e)?,
                "payload": b.message().map_err(e)?,
            }),
        ),
        _ => Err("unsupported message".into()),
    }
}

/// ErrorResponse/NoticeResponse fields by their documented names.
fn notice_fields(
    mut it: postgres_protocol::message::backend::ErrorFields<'_>,
) -> std::io::Result<Map<String, Value>> {
    let mut out = Map::new();
    while let Some(f) = it.next()? {
        let key = match f.type_() {
            b'S' => "severity",
            b'V' => "severity_nonlocalized",
            b'C' => "code",
            b'M' => "message",
            b'D' => "detail",
            b'H' => "hint",
            b'P' => "position",
            b'p' => "internal_position",
            b'q' => "internal_query",
            b'W' => "where",
            b's' => "schema",
            b't' => "table",
            b'c' => "column",
            b'd' => "data_type",
            b'n' => "constraint",
            b'F' => "file",
            b'L' => "line",
            b'R' => "routine",
            other => {
                out.insert((other as char).to_string(), text(f.value_bytes()).into());
                continue;
            }
        };
        out.insert(key.to_string(), text(f.value_bytes()).into());
    }
    Ok(out)
}

/// Backend messages postgres-protocol does not parse, and Authentication codes it rejects.
fn by_hand(tag: u8, body: &[u8]) -> Option<Backend> {
    let mut r = Reader::new(body);
    let (name, fields, effect) = match tag {
        b'W' => {
            let format = r.u8()?;
            let n = r.u16()?;
            let formats = (0..n).map(|_| r.i16()).collect::<Option<Vec<_>>>()?;
            (
                "CopyBothResponse",
                json!({ "format": format, "column_formats": formats }),
                Effect::None,
            )
        }
        b'v' => {
            let minor = r.i32()?;
            let n = r.i32()?;
            let options = (0..n.max(0))
                .map(|_| r.cstr().map(|s| s.into_owned()))
                .collect::<Option<Vec<_>>>()?;
            (
                "NegotiateProtocolVersion",
                json!({ "minor_version": minor, "unrecognized_options": options }),
                Effect::None,
            )
        }
        b'V' => {
            let len = r.i32()?;
            (
                "FunctionCallResponse",
                json!({ "length": len }),
                Effect::None,
            )
        }
        b'R' => {
            let code = r.i32()?;
            (
                "Authentication",
                json!({ "code": code }),
                Effect::Auth(code),
            )
        }
        _ => return None,
    };
    Some(Backend {
        name,
        fields,
        effect,
    })
}

/// True for the tags a backend sends.
pub(crate) fn known_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'R' | b'K'
            | b'2'
            | b'3'
            | b'C'
            | b'd'
            | b'c'
            | b'G'
            | b'H'
            | b'W'
            | b'D'
            | b'I'
            | b'E'
            | b'V'
            | b'v'
            | b'n'
            | b'N'
            | b'A'
            | b't'
            | b'S'
            | b'1'
            | b's'
            | b'Z'
            | b'T'
    )
}

/// The wire name of a backend tag (for messages too large or malformed to decode).
pub(crate) fn tag_name(tag: u8) -> &'static str {
    match tag {
        b'R' => "Authentication",
        b'K' => "BackendKeyData",
        b'2' => "BindComplete",
        b'3' => "CloseComplete",
        b'C' => "CommandComplete",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'W' => "CopyBothResponse",
        b'D' => "DataRow",
        b'I' => "EmptyQueryResponse",
        b'E' => "ErrorResponse",
        b'V' => "FunctionCallResponse",
        b'v' => "NegotiateProtocolVersion",
        b'n' => "NoData",
        b'N' => "NoticeResponse",
        b'A' => "NotificationResponse",
        b't' => "ParameterDescription",
        b'S' => "ParameterStatus",
        b'1' => "ParseComplete",
        b's' => "PortalSuspended",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        _ => "Unknown",
    }
}
