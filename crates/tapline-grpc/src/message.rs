//! `ProcessMessage` (a tapline extension of lueur's contract): decoded PostgreSQL messages to
//! plugins that set `can_handle_messages`, and their answers as message verdicts.

use std::time::Duration;

use tapline_core::{Flow, Message, MessageVerdict, PgError, Side};

use crate::error::GrpcError;
use crate::proto::{self, process_message_request::Sender, process_message_response::Action};

const RPC: &str = "ProcessMessage";
/// The longest delay a plugin may ask for (an hour).
const MAX_DELAY_MS: u32 = 3_600_000;

/// The request for `message` of `flow`.
pub(crate) fn request(flow: &Flow, message: &Message) -> proto::ProcessMessageRequest {
    proto::ProcessMessageRequest {
        id: flow.uid.to_string(),
        sender: match message.from {
            Side::Client => Sender::Client,
            Side::Server => Sender::Server,
        }
        .into(),
        protocol: message.protocol.as_str().to_string(),
        r#type: message.type_name.clone(),
        raw: message.raw.clone(),
        fields_json: message.fields.to_string(),
    }
}

/// What the plugin asked for: the verdict, and how long to hold the message first.
pub(crate) struct Answer {
    pub(crate) verdict: MessageVerdict,
    pub(crate) delay: Option<Duration>,
}

/// The answer as a verdict on `message` (whose `raw` a replacement changes).
pub(crate) fn answer(
    answer: proto::ProcessMessageResponse,
    message: &mut Message,
    plugin: &str,
) -> Result<Answer, GrpcError> {
    let bad = |what: String| GrpcError::BadAnswer { rpc: RPC, what };
    let go_on = |delay| Answer {
        verdict: MessageVerdict::Continue,
        delay,
    };
    Ok(match answer.action {
        None | Some(Action::PassThrough(_)) => go_on(None),
        Some(Action::ReplaceRaw(raw)) => {
            message.raw = raw;
            go_on(None)
        }
        Some(Action::DelayMs(ms)) if ms <= MAX_DELAY_MS => {
            go_on(Some(Duration::from_millis(ms.into())))
        }
        Some(Action::DelayMs(ms)) => return Err(bad(format!("delay_ms {ms} is over an hour"))),
        Some(Action::PgError(e)) => {
            if !PgError::valid_code(&e.code) {
                return Err(bad(format!("pg_error code {:?} is not a SQLSTATE", e.code)));
            }
            let severity = match e.severity.as_str() {
                "" => "ERROR".to_string(),
                s => s.to_ascii_uppercase(),
            };
            let message = match e.message.as_str() {
                "" => format!("injected by gRPC plugin {plugin}"),
                m => m.to_string(),
            };
            Answer {
                verdict: MessageVerdict::PgError(PgError {
                    severity,
                    code: e.code,
                    message,
                }),
                delay: None,
            }
        }
        Some(Action::Close(c)) => Answer {
            verdict: MessageVerdict::Close(match c.reason.as_str() {
                "" => format!("closed by gRPC plugin {plugin}"),
                r => r.to_string(),
            }),
            delay: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tapline_core::Protocol;

    use super::*;

    fn msg() -> Message {
        Message {
            protocol: Protocol::Postgres,
            from: Side::Client,
            type_name: "Query".into(),
            fields: serde_json::json!({"sql": "select 1"}),
            raw: Bytes::from_static(b"Q\0\0\0\rselect 1\0"),
        }
    }

    fn action(a: Action) -> proto::ProcessMessageResponse {
        proto::ProcessMessageResponse { action: Some(a) }
    }

    #[test]
    fn answers_become_verdicts() {
        let mut m = msg();
        let a = answer(
            action(Action::PgError(proto::PgError {
                severity: String::new(),
                code: "40001".into(),
                message: String::new(),
            })),
            &mut m,
            "p",
        )
        .unwrap();
        assert!(
            matches!(a.verdict, MessageVerdict::PgError(e) if e.severity == "ERROR" && e.message.contains("gRPC plugin p"))
        );
        let a = answer(action(Action::DelayMs(250)), &mut m, "p").unwrap();
        assert_eq!(
            (a.verdict, a.delay),
            (MessageVerdict::Continue, Some(Duration::from_millis(250)))
        );
        answer(
            action(Action::ReplaceRaw(b"Q\0\0\0\rselect 2\0".to_vec().into())),
            &mut m,
            "p",
        )
        .unwrap();
        assert_eq!(&m.raw[..], b"Q\0\0\0\rselect 2\0");
        let bad = action(Action::PgError(proto::PgError {
            code: "4001".into(),
            ..Default::default()
        }));
        assert!(answer(bad, &mut m, "p").is_err());
        assert_eq!(
            answer(proto::ProcessMessageResponse { action: None }, &mut m, "p")
                .unwrap()
                .verdict,
            MessageVerdict::Continue
        );
    }
}
