//! Syslog messages: RFC 5424 with structured data, RFC 3164, and their framing over TCP.

use super::*;
use crate::human::describe;

/// Appends `MSG-LEN SP SYSLOG-MSG` (RFC 6587 octet counting).
pub fn frame_octet_counted(message: &[u8], out: &mut Vec<u8>) {
    let _ = write!(out, "{} ", message.len());
    out.extend_from_slice(message);
}

/// The syslog severity for an event: warning for alerts, info for the rest.
fn severity(event: &Event) -> u8 {
    match event.kind {
        EventKind::Alert(_) => 4,
        _ => 6,
    }
}

/// Facility `user` (1).
const FACILITY: u8 = 1;

/// Formats one message (without transport framing).
pub fn format_message(event: &Event, format: SyslogFormat, hostname: &str, pid: u32) -> Vec<u8> {
    let pri = FACILITY * 8 + severity(event);
    let mut text = String::with_capacity(256);
    match format {
        SyslogFormat::Rfc5424 => {
            let _ = write!(
                text,
                "<{pri}>1 {} {} tapline {pid} {} ",
                event.ts,
                header_token(hostname),
                event.kind_name()
            );
            structured_data(event, &mut text);
            text.push(' ');
            describe(event, &mut text);
        }
        SyslogFormat::Rfc3164 => {
            let _ = write!(
                text,
                "<{pri}>{} {} tapline[{pid}]: ",
                bsd_timestamp(event.ts),
                header_token(hostname)
            );
            let _ = write!(text, "kind={}", event.kind_name());
            if let Some(flow) = &event.flow {
                let _ = write!(text, " flow={}", flow.id);
            }
            if let EventKind::Record(r) | EventKind::Alert(r) = &event.kind {
                let _ = write!(text, " plugin={}", header_token(&r.plugin));
            }
            text.push(' ');
            describe(event, &mut text);
        }
    }
    text.into_bytes()
}

/// `[tapline@32473 kind=… flow=… …][fields@32473 …]`
fn structured_data(event: &Event, out: &mut String) {
    let _ = write!(out, "[tapline@{ENTERPRISE} kind=\"{}\"", event.kind_name());
    if let Some(flow) = &event.flow {
        let _ = write!(
            out,
            " flow=\"{}\" mode=\"{}\" protocol=\"{}\" client=\"{}\" server=\"{}\"",
            flow.id,
            flow.mode.as_str(),
            flow.protocol,
            flow.client,
            flow.server
        );
    } else {
        let _ = write!(out, " mode=\"{}\"", event.mode.as_str());
    }
    let record = match &event.kind {
        EventKind::Record(r) | EventKind::Alert(r) => Some(r),
        _ => None,
    };
    if let Some(r) = record {
        out.push_str(" plugin=\"");
        param_value(&r.plugin, out);
        out.push('"');
    }
    out.push(']');
    let fields = record.and_then(|r| r.fields.as_object());
    if let Some(fields) = fields.filter(|f| !f.is_empty()) {
        let _ = write!(out, "[fields@{ENTERPRISE}");
        for (name, value) in fields {
            out.push(' ');
            param_name(name, out);
            out.push_str("=\"");
            match value {
                serde_json::Value::String(s) => param_value(s, out),
                other => param_value(&other.to_string(), out),
            }
            out.push('"');
        }
        out.push(']');
    }
}

/// An SD-NAME: printable US-ASCII except `=`, space, `]`, `"`, at most 32 characters; other
/// characters become `_`.
fn param_name(name: &str, out: &mut String) {
    let mut n = 0;
    for c in name.chars().take(32) {
        n += 1;
        out.push(match c {
            '!'..='~' if !matches!(c, '=' | ']' | '"') => c,
            _ => '_',
        });
    }
    if n == 0 {
        out.push('_');
    }
}

/// A PARAM-VALUE with `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
fn param_value(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A header field (HOSTNAME, APP-NAME) as one token: printable ASCII, `-` when empty.
fn header_token(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if t.is_empty() {
        "-".into()
    } else {
        t
    }
}

/// `Mmm dd hh:mm:ss` in UTC (RFC 3164 has no zone; tapline's clock is UTC everywhere).
pub(super) fn bsd_timestamp(ts: Timestamp) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Reuse the RFC 3339 rendering: YYYY-MM-DDTHH:MM:SS.ffffffZ
    let iso = ts.to_string();
    let month: usize = iso.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let day: u32 = iso.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
    let time = iso.get(11..19).unwrap_or("00:00:00");
    format!("{} {day:>2} {time}", MONTHS[(month - 1).min(11)])
}

/// This machine's host name (Linux), or `-`.
pub(super) fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into())
}
