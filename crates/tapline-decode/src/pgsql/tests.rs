use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;
use postgres_protocol::IsNull;
use proptest::prelude::*;
use serde_json::json;
use tapline_core::PgTransaction;

use super::*;

const C: Side = Side::Client;
const S: Side = Side::Server;

fn decode(script: &[(Side, i64, &[u8])]) -> (Vec<EventKind>, PgDecoder) {
    let mut d = PgDecoder::new();
    let mut out = Vec::new();
    for (side, ts, data) in script {
        d.feed(*side, Timestamp(*ts), data, &mut out);
    }
    (out, d)
}

fn messages(events: &[EventKind]) -> Vec<(Side, &str, &Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::Message(m) => Some((m.from, m.type_name.as_str(), &m.fields)),
            _ => None,
        })
        .collect()
}

fn names(events: &[EventKind]) -> Vec<&str> {
    messages(events).into_iter().map(|(_, n, _)| n).collect()
}

fn transactions(events: &[EventKind]) -> Vec<&PgTransaction> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::Transaction(Transaction::Postgres(t)) => Some(t),
            _ => None,
        })
        .collect()
}

/// A backend message: tag, length, body.
fn be(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn row_description(cols: &[(&str, i16)]) -> Vec<u8> {
    let mut b = (cols.len() as u16).to_be_bytes().to_vec();
    for (name, format) in cols {
        b.extend(cstr(name));
        b.extend(0u32.to_be_bytes()); // table oid
        b.extend(0i16.to_be_bytes()); // column
        b.extend(25u32.to_be_bytes()); // type oid (text)
        b.extend((-1i16).to_be_bytes());
        b.extend((-1i32).to_be_bytes());
        b.extend(format.to_be_bytes());
    }
    be(b'T', &b)
}

fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            Some(v) => {
                b.extend((v.len() as i32).to_be_bytes());
                b.extend(*v);
            }
            None => b.extend((-1i32).to_be_bytes()),
        }
    }
    be(b'D', &b)
}

fn error(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.push(*k);
        b.extend(cstr(v));
    }
    b.push(0);
    be(b'E', &b)
}

fn frontend(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b.to_vec()
}

#[test]
fn simple_query_session_from_hex() {
    // SSLRequest, answered 'N', then a StartupMessage (user=postgres, database=db).
    let ssl = hex::decode("0000000804d2162f").unwrap();
    let startup = hex::decode(
        "000000230003000075736572 00 706f737467726573 00 6461746162617365 00 6462 00 00"
            .replace(' ', ""),
    )
    .unwrap();
    // AuthenticationOk, ParameterStatus(server_version=15), BackendKeyData, ReadyForQuery(I).
    let hello = hex::decode(concat!(
        "520000000800000000",
        "53000000167365727665725f76657273696f6e00313500",
        "4b0000000c000004d2000010e1",
        "5a0000000549"
    ))
    .unwrap();
    let query = hex::decode("510000001573656c656374206e756c6c2c2027782700").unwrap();
    let mut answer = row_description(&[("a", 0), ("b", 0)]);
    answer.extend(data_row(&[None, Some(b"x")]));
    answer.extend(be(b'C', &cstr("SELECT 1")));
    answer.extend(be(b'Z', b"I"));
    let (ev, d) = decode(&[
        (C, 1, &ssl),
        (S, 2, b"N"),
        (C, 3, &startup),
        (S, 4, &hello),
        (C, 10, &query),
        (S, 25, &answer),
    ]);
    assert!(!d.is_tls());
    assert_eq!(
        names(&ev),
        [
            "SSLRequest",
            "EncryptionResponse",
            "StartupMessage",
            "AuthenticationOk",
            "ParameterStatus",
            "BackendKeyData",
            "ReadyForQuery",
            "Query",
            "RowDescription",
            "DataRow",
            "CommandComplete",
            "ReadyForQuery"
        ]
    );
    let m = messages(&ev);
    assert_eq!(
        m[2].2["parameters"],
        json!({"user": "postgres", "database": "db"})
    );
    assert_eq!(m[4].2, &json!({"name": "server_version", "value": "15"}));
    assert_eq!(m[5].2, &json!({"process_id": 1234, "secret_key": 4321}));
    assert_eq!(m[7].2, &json!({"sql": "select null, 'x'"}));
    assert_eq!(m[8].2["columns"][1]["name"], "b");
    assert_eq!(m[9].2, &json!({"values": [null, "x"]}));
    assert_eq!(m[10].2, &json!({"tag": "SELECT 1"}));
    let t = transactions(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (
            t[0].sql.as_str(),
            t[0].rows,
            t[0].tag.as_str(),
            t[0].latency.as_micros()
        ),
        ("select null, 'x'", 1, "SELECT 1", 15)
    );
}

#[test]
fn ssl_accepted_makes_the_connection_tls() {
    let ssl = hex::decode("0000000804d2162f").unwrap();
    let (ev, d) = decode(&[
        (C, 1, &ssl),
        (S, 2, b"S\x16\x03\x03"),
        (C, 3, b"\x16\x03\x01\x02\x00"),
    ]);
    assert!(d.is_tls());
    assert_eq!(names(&ev), ["SSLRequest", "EncryptionResponse"]);
}

#[test]
fn cancel_request() {
    let cancel = hex::decode("00000010 04d2162e 000004d2 000010e1".replace(' ', "")).unwrap();
    let (ev, _) = decode(&[(C, 1, &cancel)]);
    let m = messages(&ev);
    assert_eq!(m[0].1, "CancelRequest");
    assert_eq!(m[0].2, &json!({"process_id": 1234, "secret_key": 4321}));
}

#[test]
fn extended_query_with_parameters_and_formats() {
    let client = frontend(|b| {
        fe::parse("s1", "select $1::int, $2, $3", [23, 0, 17], b).unwrap();
        fe::bind(
            "p1",
            "s1",
            [0i16, 0, 1],
            [Some(&b"42"[..]), None, Some(&b"\x00\xff"[..])],
            |v, buf| match v {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [1i16],
            b,
        )
        .map_err(|_| ())
        .unwrap();
        fe::describe(b'P', "p1", b).unwrap();
        fe::execute("p1", 0, b).unwrap();
        fe::sync(b);
    });
    let mut server = be(b'1', b"");
    server.extend(be(b'2', b""));
    server.extend(row_description(&[("a", 1), ("b", 1), ("c", 1)]));
    server.extend(data_row(&[Some(&[0, 0, 0, 42]), None, Some(b"\x00\xff")]));
    server.extend(be(b'C', &cstr("SELECT 1")));
    server.extend(be(b'Z', b"I"));
    let (ev, _) = decode(&[(C, 1, &client), (S, 3, &server)]);
    assert_eq!(
        names(&ev),
        [
            "Parse",
            "Bind",
            "Describe",
            "Execute",
            "Sync",
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "DataRow",
            "CommandComplete",
            "ReadyForQuery"
        ]
    );
    let m = messages(&ev);
    assert_eq!(
        m[0].2,
        &json!({"statement": "s1", "sql": "select $1::int, $2, $3", "param_types": [23, 0, 17]})
    );
    assert_eq!(m[1].2["params"], json!(["42", null, "\\x00ff"]));
    assert_eq!(m[1].2["formats"], json!([0, 0, 1]));
    assert_eq!(m[1].2["result_formats"], json!([1]));
    // Bind and Execute name the SQL they run, so a prepared statement's executions can be
    // matched by the statement they were prepared from.
    assert_eq!(m[1].2["sql"], "select $1::int, $2, $3");
    assert_eq!(m[3].2["sql"], "select $1::int, $2, $3");
    assert_eq!(m[2].2, &json!({"kind": "portal", "name": "p1"}));
    assert_eq!(m[8].2, &json!({"values": ["\\x0000002a", null, "\\x00ff"]}));
    let t = transactions(&ev);
    assert_eq!(t[0].sql, "select $1::int, $2, $3");
    assert_eq!(
        t[0].params,
        vec![Some("42".into()), None, Some("\\x00ff".into())]
    );
    assert_eq!((t[0].rows, t[0].latency.as_micros()), (1, 2));
}

#[test]
fn without_fields_messages_are_named_and_transactions_unchanged() {
    let client = frontend(|b| {
        fe::query("select 1; select 'x'", b).unwrap();
        fe::parse("", "select $1", [], b).unwrap();
        fe::bind(
            "",
            "",
            [0i16],
            [Some(&b"7"[..])],
            |v, buf| match v {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [0i16],
            b,
        )
        .map_err(|_| ())
        .unwrap();
        fe::execute("", 0, b).unwrap();
        fe::sync(b);
    });
    let mut server = row_description(&[("a", 0)]);
    server.extend(data_row(&[Some(b"1")]));
    server.extend(be(b'C', &cstr("SELECT 1")));
    server.extend(row_description(&[("b", 0)]));
    server.extend(data_row(&[Some(b"x")]));
    server.extend(data_row(&[None]));
    server.extend(be(b'C', &cstr("SELECT 2")));
    server.extend(be(b'Z', b"I"));
    server.extend(be(b'1', b""));
    server.extend(be(b'2', b""));
    server.extend(data_row(&[Some(b"7")]));
    server.extend(error(&[(b'S', "ERROR"), (b'C', "22000"), (b'M', "boom")]));
    server.extend(be(b'Z', b"I"));
    let script: [(Side, i64, &[u8]); 2] = [(C, 1, &client), (S, 4, &server)];
    let (full, _) = decode(&script);
    let mut d = PgDecoder::with_fields(false);
    let mut light = Vec::new();
    for (side, ts, data) in script {
        d.feed(side, Timestamp(ts), data, &mut light);
    }
    assert_eq!(names(&light), names(&full));
    assert_eq!(transactions(&light), transactions(&full));
    assert_eq!(transactions(&light).len(), 3);
    for e in &light {
        if let EventKind::Message(m) = e {
            assert!(m.raw.is_empty(), "{}", m.type_name);
            assert!(
                m.fields.is_null() || m.fields.is_object(),
                "{}",
                m.type_name
            );
        }
    }
    let m = messages(&light);
    assert!(m
        .iter()
        .filter(|(_, n, _)| *n == "DataRow")
        .all(|(_, _, f)| f.is_null()));
}

#[test]
fn error_response_fields_and_transaction() {
    let client = frontend(|b| fe::query("select 1/0", b).unwrap());
    let mut server = error(&[
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "22012"),
        (b'M', "division by zero"),
        (b'F', "int.c"),
        (b'L', "841"),
        (b'R', "int4div"),
        (b'Y', "future"),
    ]);
    server.extend(be(b'Z', b"E"));
    let (ev, _) = decode(&[(C, 1, &client), (S, 2, &server)]);
    let m = messages(&ev);
    assert_eq!(
        m[1].2,
        &json!({
            "severity": "ERROR", "severity_nonlocalized": "ERROR", "code": "22012",
            "message": "division by zero", "file": "int.c", "line": "841",
            "routine": "int4div", "Y": "future"
        })
    );
    let t = transactions(&ev);
    assert_eq!(t[0].error_code.as_deref(), Some("22012"));
    assert_eq!(t[0].error_message.as_deref(), Some("division by zero"));
    assert_eq!(t[0].tag, "");
}

#[test]
fn sasl_exchange_names_password_messages() {
    let client = |f: &dyn Fn(&mut BytesMut)| frontend(|b| f(b));
    let mut sasl = 10i32.to_be_bytes().to_vec();
    sasl.extend(cstr("SCRAM-SHA-256"));
    sasl.push(0);
    let (ev, _) = decode(&[
        (S, 1, &be(b'R', &sasl)),
        (
            C,
            2,
            &client(&|b| fe::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", b).unwrap()),
        ),
        (S, 3, &be(b'R', &[0, 0, 0, 11, b'r', b'='])),
        (C, 4, &client(&|b| fe::sasl_response(b"c=biws", b).unwrap())),
        (S, 5, &be(b'R', &[0, 0, 0, 12, b'v', b'='])),
        (S, 5, &be(b'R', &[0, 0, 0, 0])),
    ]);
    assert_eq!(
        names(&ev),
        [
            "AuthenticationSASL",
            "SASLInitialResponse",
            "AuthenticationSASLContinue",
            "SASLResponse",
            "AuthenticationSASLFinal",
            "AuthenticationOk"
        ]
    );
    assert_eq!(
        messages(&ev)[0].2,
        &json!({"mechanisms": ["SCRAM-SHA-256"]})
    );
    let md5 = decode(&[
        (S, 1, &be(b'R', &[0, 0, 0, 5, 1, 2, 3, 4])),
        (
            C,
            2,
            &client(&|b| fe::password_message(b"md5abc", b).unwrap()),
        ),
    ])
    .0;
    assert_eq!(
        names(&md5),
        ["AuthenticationMD5Password", "PasswordMessage"]
    );
    assert_eq!(messages(&md5)[0].2, &json!({"salt": "01020304"}));
}

#[test]
fn copy_in_and_out() {
    let client = frontend(|b| {
        fe::query("copy t from stdin", b).unwrap();
    });
    let copy_data = frontend(|b| {
        fe::CopyData::new(&b"1\tx\n"[..]).unwrap().write(b);
        fe::copy_done(b);
    });
    let mut copy_in = vec![0u8, 0, 2, 0, 0, 0, 0];
    copy_in.truncate(7);
    let (ev, _) = decode(&[
        (C, 1, &client),
        (S, 2, &be(b'G', &copy_in)),
        (C, 3, &copy_data),
        (S, 4, &[be(b'C', &cstr("COPY 1")), be(b'Z', b"I")].concat()),
        (
            C,
            5,
            &frontend(|b| fe::query("copy t to stdout", b).unwrap()),
        ),
        (
            S,
            6,
            &[
                be(b'H', &copy_in),
                be(b'd', b"1\tx\n"),
                be(b'c', b""),
                be(b'C', &cstr("COPY 1")),
                be(b'Z', b"I"),
            ]
            .concat(),
        ),
    ]);
    assert_eq!(
        names(&ev),
        [
            "Query",
            "CopyInResponse",
            "CopyData",
            "CopyDone",
            "CommandComplete",
            "ReadyForQuery",
            "Query",
            "CopyOutResponse",
            "CopyData",
            "CopyDone",
            "CommandComplete",
            "ReadyForQuery"
        ]
    );
    let t = transactions(&ev);
    assert_eq!((t[0].rows, t[1].rows), (1, 1));
    assert_eq!(
        messages(&ev)[1].2,
        &json!({"format": 0, "column_formats": [0, 0]})
    );
}

#[test]
fn notifications_notices_and_small_messages() {
    let mut server = be(
        b'A',
        &[&1234u32.to_be_bytes()[..], &cstr("chan"), &cstr("hi")].concat(),
    );
    server.extend(be(
        b'N',
        &[
            b'S', b'N', b'O', b'T', b'I', b'C', b'E', 0, b'M', b'x', 0, 0,
        ],
    ));
    for tag in [b'n', b'3', b's', b'I'] {
        server.extend(be(tag, b""));
    }
    server.extend(be(b't', &[0, 1, 0, 0, 0, 23]));
    let (ev, _) = decode(&[(S, 1, &server)]);
    assert_eq!(
        names(&ev),
        [
            "NotificationResponse",
            "NoticeResponse",
            "NoData",
            "CloseComplete",
            "PortalSuspended",
            "EmptyQueryResponse",
            "ParameterDescription"
        ]
    );
    let m = messages(&ev);
    assert_eq!(
        m[0].2,
        &json!({"process_id": 1234, "channel": "chan", "payload": "hi"})
    );
    assert_eq!(m[1].2, &json!({"severity": "NOTICE", "message": "x"}));
    assert_eq!(m[6].2, &json!({"types": [23]}));
}

#[test]
fn messages_split_across_reads_and_many_in_one() {
    // An empty StartupMessage (length 9: length, code, final NUL), then three messages.
    let mut startup = hex::decode("000000090003000000").unwrap();
    startup.extend(frontend(|b| {
        fe::query("select 1", b).unwrap();
        fe::query("select 2", b).unwrap();
        fe::terminate(b);
    }));
    let (whole, _) = decode(&[(C, 1, &startup)]);
    assert_eq!(
        names(&whole),
        ["StartupMessage", "Query", "Query", "Terminate"]
    );
    let script: Vec<(Side, i64, &[u8])> = startup.chunks(1).map(|b| (C, 1, b)).collect();
    let (split, _) = decode(&script);
    assert_eq!(format!("{whole:?}"), format!("{split:?}"));
}

#[test]
fn a_capture_that_starts_mid_connection() {
    let client = frontend(|b| fe::query("select 3", b).unwrap());
    let (ev, _) = decode(&[(C, 1, &client), (S, 2, &be(b'Z', b"I"))]);
    assert_eq!(names(&ev), ["Query", "ReadyForQuery"]);
}

#[test]
fn hostile_lengths_stay_bounded() {
    // A Query claiming 2^31 bytes: no real message is that long, so it is skipped as garbage.
    let mut d = PgDecoder::new();
    let mut out = Vec::new();
    d.client.state = State::Typed;
    d.feed(
        C,
        Timestamp(1),
        &hex::decode("5180000000").unwrap(),
        &mut out,
    );
    let filler = vec![b'a'; 65536];
    for _ in 0..64 {
        d.feed(C, Timestamp(2), &filler, &mut out);
        assert!(d.client.buf.len() <= MAX_MESSAGE);
    }
    d.feed(
        C,
        Timestamp(3),
        &frontend(|b| fe::query("select 4", b).unwrap()),
        &mut out,
    );
    assert_eq!(names(&out), ["Query"]);
    assert_eq!(messages(&out)[0].2["sql"], "select 4");

    // A CopyData of 100 MB (legal, too long to buffer): reported with its length, skipped.
    let mut d = PgDecoder::new();
    let mut out = Vec::new();
    d.feed(
        S,
        Timestamp(1),
        &hex::decode("6405f5e104").unwrap(),
        &mut out,
    );
    for _ in 0..10 {
        d.feed(S, Timestamp(2), &filler, &mut out);
        assert!(d.server.buf.is_empty());
    }
    assert_eq!(names(&out), ["CopyData"]);
    assert_eq!(
        messages(&out)[0].2,
        &json!({"length": 100_000_004u32, "truncated": true})
    );
    assert!(matches!(d.server.state, State::Skip(_)));
}

#[test]
fn off_by_one_lengths() {
    // Query "select 5" with its length one short: the NUL falls outside, so the body is
    // malformed; the stray NUL is garbage and the next message is still found.
    let mut bad = frontend(|b| fe::query("select 5", b).unwrap());
    bad[4] -= 1;
    let good = frontend(|b| fe::query("select 6", b).unwrap());
    let (ev, _) = decode(&[
        (C, 1, &hex::decode("000000090003000000").unwrap()),
        (C, 2, &bad),
        (C, 3, &good),
    ]);
    let m = messages(&ev);
    assert_eq!(m[1].1, "Query");
    assert_eq!(m[1].2, &json!({"malformed": true}));
    assert_eq!(m.last().unwrap().2, &json!({"sql": "select 6"}));

    // One too long: the message swallows the next one's tag; resync finds the one after.
    let mut long = be(b'C', &cstr("SELECT 1"));
    long[4] += 1;
    let server = [long, be(b'Z', b"I"), be(b'Z', b"T")].concat();
    let (ev, _) = decode(&[(S, 1, &server)]);
    let m = messages(&ev);
    assert_eq!(
        m[0].2["malformed"],
        "invalid message length: expected buffer to be empty"
    );
    assert_eq!(m.last().unwrap().2, &json!({"status": "T"}));
}

#[test]
fn truncated_messages_wait_for_more() {
    let whole = be(b'C', &cstr("SELECT 1"));
    for cut in 0..whole.len() {
        let (ev, d) = decode(&[(S, 1, &whole[..cut])]);
        assert!(ev.is_empty());
        assert_eq!(d.server.buf.len(), cut);
    }
}

#[test]
fn a_gap_resyncs_on_the_next_message() {
    let mut d = PgDecoder::new();
    let mut out = Vec::new();
    let q = frontend(|b| fe::query("select 7", b).unwrap());
    d.client.state = State::Typed;
    d.feed(C, Timestamp(1), &q[..6], &mut out);
    d.gap(C, 50);
    d.feed(
        C,
        Timestamp(2),
        &[&b"lost tail\0"[..], &q, &q].concat(),
        &mut out,
    );
    assert_eq!(names(&out), ["Query", "Query"]);
}

/// A frontend message generated for round trips.
#[derive(Debug, Clone)]
enum Fe {
    Query(String),
    Parse(String, String),
    Bind(String, Vec<Option<Vec<u8>>>),
    Execute(String, i32),
    Sync,
    Flush,
    CopyData(Vec<u8>),
}

/// A backend message generated for round trips.
#[derive(Debug, Clone)]
enum Be {
    Row(Vec<Option<String>>),
    Complete(String),
    Error(String, String),
    Status(String, String),
    Ready(u8),
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _*'(),;=]{0,40}"
}

fn fe_msg() -> impl Strategy<Value = Fe> {
    prop_oneof![
        text().prop_map(Fe::Query),
        (text(), text()).prop_map(|(a, b)| Fe::Parse(a, b)),
        (
            text(),
            prop::collection::vec(
                prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                0..5
            )
        )
            .prop_map(|(a, b)| Fe::Bind(a, b)),
        (text(), any::<i32>()).prop_map(|(a, b)| Fe::Execute(a, b)),
        Just(Fe::Sync),
        Just(Fe::Flush),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(Fe::CopyData),
    ]
}

fn be_msg() -> impl Strategy<Value = Be> {
    prop_oneof![
        prop::collection::vec(prop::option::of(text()), 0..6).prop_map(Be::Row),
        text().prop_map(Be::Complete),
        ("[0-9A-Z]{5}", text()).prop_map(|(a, b)| Be::Error(a, b)),
        (text(), text()).prop_map(|(a, b)| Be::Status(a, b)),
        prop::sample::select(vec![b'I', b'T', b'E']).prop_map(Be::Ready),
    ]
}

fn encode_fe(m: &Fe) -> Vec<u8> {
    frontend(|b| match m {
        Fe::Query(s) => fe::query(s, b).unwrap(),
        Fe::Parse(n, s) => fe::parse(n, s, [], b).unwrap(),
        Fe::Bind(p, params) => fe::bind(
            p,
            "",
            [1i16],
            params.iter(),
            |v, buf| match v {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [0i16],
            b,
        )
        .map_err(|_| ())
        .unwrap(),
        Fe::Execute(p, n) => fe::execute(p, *n, b).unwrap(),
        Fe::Sync => fe::sync(b),
        Fe::Flush => fe::flush(b),
        Fe::CopyData(d) => fe::CopyData::new(&d[..]).unwrap().write(b),
    })
}

fn expect_fe(m: &Fe) -> (&'static str, Value) {
    match m {
        Fe::Query(s) => ("Query", json!({ "sql": s })),
        Fe::Parse(n, s) => (
            "Parse",
            json!({ "statement": n, "sql": s, "param_types": [] }),
        ),
        Fe::Bind(p, params) => {
            let params: Vec<Value> = params
                .iter()
                .map(|v| {
                    v.as_ref()
                        .map_or(Value::Null, |v| Value::String(value_text(v, 1)))
                })
                .collect();
            (
                "Bind",
                json!({ "portal": p, "statement": "", "formats": [1], "params": params, "result_formats": [0] }),
            )
        }
        Fe::Execute(p, n) => ("Execute", json!({ "portal": p, "max_rows": n })),
        Fe::Sync => ("Sync", json!({})),
        Fe::Flush => ("Flush", json!({})),
        Fe::CopyData(d) => ("CopyData", json!({ "length": d.len() })),
    }
}

fn encode_be(m: &Be) -> Vec<u8> {
    match m {
        Be::Row(values) => {
            let v: Vec<Option<&[u8]>> = values
                .iter()
                .map(|v| v.as_ref().map(|s| s.as_bytes()))
                .collect();
            data_row(&v)
        }
        Be::Complete(tag) => be(b'C', &cstr(tag)),
        Be::Error(code, msg) => error(&[(b'S', "ERROR"), (b'C', code), (b'M', msg)]),
        Be::Status(n, v) => be(b'S', &[cstr(n), cstr(v)].concat()),
        Be::Ready(s) => be(b'Z', &[*s]),
    }
}

fn expect_be(m: &Be) -> (&'static str, Value) {
    match m {
        Be::Row(values) => ("DataRow", json!({ "values": values })),
        Be::Complete(tag) => ("CommandComplete", json!({ "tag": tag })),
        Be::Error(code, msg) => (
            "ErrorResponse",
            json!({ "severity": "ERROR", "code": code, "message": msg }),
        ),
        Be::Status(n, v) => ("ParameterStatus", json!({ "name": n, "value": v })),
        Be::Ready(s) => (
            "ReadyForQuery",
            json!({ "status": (*s as char).to_string() }),
        ),
    }
}

fn feed_split(
    d: &mut PgDecoder,
    side: Side,
    bytes: &[u8],
    cuts: &[usize],
    out: &mut Vec<EventKind>,
) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut at = 0;
    for p in points.into_iter().chain(std::iter::once(bytes.len())) {
        d.feed(side, Timestamp(1), &bytes[at..p.max(at)], out);
        at = p.max(at);
    }
}

proptest! {
    #[test]
    fn frontend_round_trip_split_anywhere(
        msgs in prop::collection::vec(fe_msg(), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(encode_fe).collect();
        let run = |cuts: &[usize]| {
            let mut d = PgDecoder::new();
            d.client.state = State::Typed;
            let mut out = Vec::new();
            feed_split(&mut d, C, &bytes, cuts, &mut out);
            out
        };
        let whole = run(&[]);
        prop_assert_eq!(format!("{whole:?}"), format!("{:?}", run(&cuts)));
        // The statement's SQL on Bind and Execute is checked on its own (below).
        let got: Vec<(String, Value)> = messages(&whole)
            .into_iter()
            .map(|(_, n, f)| {
                let mut f = f.clone();
                if n == "Bind" || n == "Execute" {
                    f.as_object_mut().map(|o| o.remove("sql"));
                }
                (n.to_string(), f)
            })
            .collect();
        let want: Vec<(String, Value)> =
            msgs.iter().map(expect_fe).map(|(n, f)| (n.to_string(), f)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn backend_round_trip_split_anywhere(
        msgs in prop::collection::vec(be_msg(), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(encode_be).collect();
        let run = |cuts: &[usize]| {
            let mut d = PgDecoder::new();
            let mut out = Vec::new();
            feed_split(&mut d, S, &bytes, cuts, &mut out);
            out
        };
        let whole = run(&[]);
        prop_assert_eq!(format!("{whole:?}"), format!("{:?}", run(&cuts)));
        let got: Vec<(String, Value)> =
            messages(&whole).into_iter().map(|(_, n, f)| (n.to_string(), f.clone())).collect();
        let want: Vec<(String, Value)> =
            msgs.iter().map(expect_be).map(|(n, f)| (n.to_string(), f)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn never_panics_and_stays_bounded(
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20),
    ) {
        let mut d = PgDecoder::new();
        let mut out = Vec::new();
        for (i, (client, data)) in chunks.iter().enumerate() {
            let side = if *client { C } else { S };
            if i % 7 == 6 {
                d.gap(side, data.len() as u64);
            } else {
                d.feed(side, Timestamp(i as i64), data, &mut out);
            }
            prop_assert!(d.client.buf.len() <= MAX_MESSAGE && d.server.buf.len() <= MAX_MESSAGE);
        }
        d.finish();
    }
}
