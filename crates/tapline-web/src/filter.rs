//! The filter of a download (the page sends its filter box along): protocol, host
//! substring, status class, text substring or regular expression, errors only. A regular
//! expression is bounded in length and compiled size, and refused with a reason otherwise.

use regex::{Regex, RegexBuilder};

use crate::row::Facts;
pub use tapline_output::query::query_pairs;

/// Longest regular expression accepted, in bytes.
const MAX_PATTERN: usize = 1024;
/// Largest compiled regular expression accepted.
const MAX_COMPILED: usize = 1 << 20;

/// A parsed filter; the empty filter keeps everything.
#[derive(Debug, Default)]
pub struct Filter {
    protocol: Option<String>,
    host: Option<String>,
    /// 2 for 2xx, 4 for 4xx, …
    status_class: Option<u16>,
    text: Option<String>,
    regex: Option<Regex>,
    errors_only: bool,
}

/// Why a filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The status class is not `1xx`…`5xx`.
    #[error("status must be one of 1xx, 2xx, 3xx, 4xx, 5xx")]
    Status,
    /// The regular expression is longer than allowed.
    #[error("regex is {0} bytes long; at most {MAX_PATTERN} are accepted")]
    TooLong(usize),
    /// The regular expression does not compile (or compiles too big).
    #[error("regex: {0}")]
    Regex(String),
}

impl Filter {
    /// Reads a filter from a query string (`proto=`, `host=`, `status=4xx`, `q=`, `re=`,
    /// `errors=1`).
    pub fn from_query(query: &str) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        for (key, value) in query_pairs(query) {
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "proto" => filter.protocol = Some(value.to_lowercase()),
                "host" => filter.host = Some(value.to_lowercase()),
                "status" => {
                    filter.status_class = match value.as_bytes() {
                        [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(u16::from(c - b'0')),
                        _ => return Err(FilterError::Status),
                    }
                }
                "q" => filter.text = Some(value.to_lowercase()),
                "re" => {
                    if value.len() > MAX_PATTERN {
                        return Err(FilterError::TooLong(value.len()));
                    }
                    let regex = RegexBuilder::new(&value)
                        .size_limit(MAX_COMPILED)
                        .dfa_size_limit(MAX_COMPILED)
                        .build()
                        .map_err(|e| FilterError::Regex(first_line(&e.to_string())))?;
                    filter.regex = Some(regex);
                }
                "errors" => filter.errors_only = value == "1" || value == "true",
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Whether a row with these facts passes.
    pub fn keeps(&self, facts: &Facts) -> bool {
        self.protocol.as_ref().is_none_or(|p| facts.protocol == *p)
            && self
                .host
                .as_ref()
                .is_none_or(|h| facts.host.to_lowercase().contains(h))
            && self
                .status_class
                .is_none_or(|c| facts.status.is_some_and(|s| s / 100 == c))
            && self
                .text
                .as_ref()
                .is_none_or(|t| facts.text.to_lowercase().contains(t))
            && self.regex.as_ref().is_none_or(|r| r.is_match(&facts.text))
            && (!self.errors_only || facts.error)
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(protocol: &str, status: Option<u16>, text: &str) -> Facts {
        Facts {
            protocol: protocol.into(),
            host: "127.0.0.1:7070".into(),
            status,
            error: status.is_some_and(|s| s >= 400),
            text: text.into(),
        }
    }

    #[test]
    fn filters_narrow_by_each_field() {
        let get = facts("http", Some(200), "GET /echo");
        let missing = facts("http", Some(404), "GET /status/404");
        let sql = facts("postgres", None, "select 1");
        let f = Filter::from_query("proto=http&status=4xx").unwrap();
        assert!(!f.keeps(&get) && f.keeps(&missing) && !f.keeps(&sql));
        let f = Filter::from_query("re=%5Eselect&q=SELECT").unwrap();
        assert!(f.keeps(&sql) && !f.keeps(&get));
        let f = Filter::from_query("errors=1&host=7070").unwrap();
        assert!(f.keeps(&missing) && !f.keeps(&get));
        assert!(Filter::from_query("").unwrap().keeps(&sql));
    }

    #[test]
    fn huge_or_bad_patterns_are_refused_with_a_reason() {
        let huge = format!("re={}", "a".repeat(5000));
        assert!(matches!(
            Filter::from_query(&huge),
            Err(FilterError::TooLong(5000))
        ));
        let blowup = "re=(%5Cw%7B100%7D)%7B100%7D"; // (\w{100}){100}
        assert!(matches!(
            Filter::from_query(blowup),
            Err(FilterError::Regex(_))
        ));
        assert!(matches!(
            Filter::from_query("status=9xx"),
            Err(FilterError::Status)
        ));
    }
}
