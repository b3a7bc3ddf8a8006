//! Frontend (client → server) messages, parsed by hand: postgres-protocol only encodes them,
//! and pgwire's decoders allocate owned structs per message and pull in more than tapline
//! needs. Each parser reads one complete message body through a bounds-checked [`Reader`] and
//! returns its wire name and JSON fields; a body that does not fit its layout yields `None`.

use serde_json::{json, Map, Value};

use super::{fields_if, value_text, Reader};

/// A frontend message decoded: its wire name, fields, and what it means for the session.
pub(crate) struct Frontend {
    pub name: &'static str,
    pub fields: Value,
    pub effect: Effect,
}

/// What a frontend message tells the connection's tracker.
pub(crate) enum Effect {
    None,
    Query(String),
    Parse {
        name: String,
        sql: String,
    },
    Bind {
        portal: String,
        statement: String,
        params: Vec<Option<String>>,
    },
    Execute(String),
    Close(u8, String),
    Sync,
    /// SSLRequest or GSSENCRequest: the server answers with one byte.
    AskEncryption,
    /// StartupMessage or CancelRequest: typed messages follow (or nothing).
    Started,
}

/// The untyped start-up packets, by their code.
pub(crate) fn untyped_code(code: u32) -> Option<&'static str> {
    match code {
        80_877_102 => Some("CancelRequest"),
        80_877_103 => Some("SSLRequest"),
        80_877_104 => Some("GSSENCRequest"),
        c if c >> 16 == 3 => Some("StartupMessage"),
        _ => None,
    }
}

/// Decodes an untyped packet (`body` is everything after the length word).
pub(crate) fn untyped(body: &[u8]) -> Option<Frontend> {
    let mut r = Reader::new(body);
    let code = r.u32()?;
    let name = untyped_code(code)?;
    let (fields, effect) = match name {
        "StartupMessage" => {
            let mut parameters = Map::new();
            loop {
                let key = r.cstr()?;
                if key.is_empty() {
                    break;
                }
                parameters.insert(key.into_owned(), Value::String(r.cstr()?.into_owned()));
            }
            let version = format!("{}.{}", code >> 16, code & 0xffff);
            (
                json!({ "protocol_version": version, "parameters": parameters }),
                Effect::Started,
            )
        }
        "CancelRequest" => (
            json!({ "process_id": r.i32()?, "secret_key": r.i32()? }),
            Effect::Started,
        ),
        _ => (json!({}), Effect::AskEncryption),
    };
    Some(Frontend {
        name,
        fields,
        effect,
    })
}

/// Decodes a typed frontend message. `auth` is the last Authentication request code the
/// server sent, which names a `p` message (password, SASL initial response, SASL response).
/// Without `detail`, the frequent messages' fields are left `null` (not built).
pub(crate) fn typed(tag: u8, body: &[u8], auth: i32, detail: bool) -> Option<Frontend> {
    let mut r = Reader::new(body);
    let (name, fields, effect) = match tag {
        b'Q' => {
            let sql = r.cstr()?.into_owned();
            let fields = fields_if(detail, || json!({ "sql": sql }));
            ("Query", fields, Effect::Query(sql))
        }
        b'P' => {
            let name = r.cstr()?.into_owned();
            let sql = r.cstr()?.into_owned();
            let n = r.u16()?;
            let types = (0..n).map(|_| r.u32()).collect::<Option<Vec<_>>>()?;
            let fields = fields_if(
                detail,
                || json!({ "statement": name, "sql": sql, "param_types": types }),
            );
            ("Parse", fields, Effect::Parse { name, sql })
        }
        b'B' => return bind(&mut r, detail),
        b'D' | b'C' => {
            let kind = r.u8()?;
            let what = match kind {
                b'S' => "statement",
                b'P' => "portal",
                _ => return None,
            };
            let name = r.cstr()?.into_owned();
            let fields = json!({ "kind": what, "name": name });
            if tag == b'D' {
                ("Describe", fields, Effect::None)
            } else {
                ("Close", fields, Effect::Close(kind, name))
            }
        }
        b'E' => {
            let portal = r.cstr()?.into_owned();
            let max_rows = r.i32()?;
            let fields = fields_if(detail, || json!({ "portal": portal, "max_rows": max_rows }));
            ("Execute", fields, Effect::Execute(portal))
        }
        b'S' => ("Sync", json!({}), Effect::Sync),
        b'H' => ("Flush", json!({}), Effect::None),
        b'X' => ("Terminate", json!({}), Effect::None),
        b'd' => ("CopyData", json!({ "length": body.len() }), Effect::None),
        b'c' => ("CopyDone", json!({}), Effect::None),
        b'f' => (
            "CopyFail",
            json!({ "message": r.cstr()?.into_owned() }),
            Effect::None,
        ),
        b'F' => ("FunctionCall", json!({ "oid": r.u32()? }), Effect::None),
        b'p' => match auth {
            10 => {
                let mechanism = r.cstr()?.into_owned();
                let len = r.i32()?;
                (
                    "SASLInitialResponse",
                    json!({ "mechanism": mechanism, "length": len }),
                    Effect::None,
                )
            }
            11 => (
                "SASLResponse",
                json!({ "length": body.len() }),
                Effect::None,
            ),
            7 | 8 => ("GSSResponse", json!({ "length": body.len() }), Effect::None),
            // The password itself stays in `raw` only, out of logs.
            _ => (
                "PasswordMessage",
                json!({ "length": body.len() }),
                Effect::None,
            ),
        },
        _ => return None,
    };
    if !matches!(tag, b'd' | b'p' | b'F') && !r.is_empty() {
        return None;
    }
    Some(Frontend {
        name,
        fields,
        effect,
    })
}

/// `Bind`: portal, statement, parameter formats, parameters, result formats.
fn bind(r: &mut Reader<'_>, detail: bool) -> Option<Frontend> {
    let portal = r.cstr()?.into_owned();
    let statement = r.cstr()?.into_owned();
    let nfmt = r.u16()?;
    let formats = (0..nfmt).map(|_| r.i16()).collect::<Option<Vec<_>>>()?;
    let nparams = r.u16()?;
    let mut params = Vec::new();
    for i in 0..nparams as usize {
        let len = r.i32()?;
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => *formats.get(i)?,
        };
        params.push(match usize::try_from(len) {
            Ok(len) => Some(value_text(r.bytes(len)?, format)),
            Err(_) => None,
        });
    }
    let nres = r.u16()?;
    let result_formats = (0..nres).map(|_| r.i16()).collect::<Option<Vec<_>>>()?;
    if !r.is_empty() {
        return None;
    }
    Some(Frontend {
        name: "Bind",
        fields: fields_if(detail, || {
            json!({
                "portal": portal,
                "statement": statement,
                "formats": formats,
                "params": params,
                "result_formats": result_formats,
            })
        }),
        effect: Effect::Bind {
            portal,
            statement,
            params,
        },
    })
}

/// True for the tags a frontend can send after start-up.
pub(crate) fn known_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'B' | b'C'
            | b'd'
            | b'c'
            | b'f'
            | b'D'
            | b'E'
            | b'H'
            | b'F'
            | b'P'
            | b'p'
            | b'Q'
            | b'S'
            | b'X'
    )
}

/// The wire name of a frontend tag (for messages too large or malformed to decode).
pub(crate) fn tag_name(tag: u8) -> &'static str {
    match tag {
        b'B' => "Bind",
        b'C' => "Close",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'D' => "Describe",
        b'E' => "Execute",
        b'H' => "Flush",
        b'F' => "FunctionCall",
        b'P' => "Parse",
        b'p' => "PasswordMessage",
        b'Q' => "Query",
        b'S' => "Sync",
        b'X' => "Terminate",
        _ => "Unknown",
    }
}
