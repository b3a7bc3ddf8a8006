//! Which connections are intercepted: every one (`--intercept-tls`), only those to some hosts
//! (`--intercept-hosts`), never those to others (`--ignore-hosts`, which wins: clients that
//! pin certificates must get the origin's own).
//!
//! A pattern is a host glob with an optional port: `*` stands for any run of characters
//! (dots included), `?` for one; `api.example.com`, `*.example.com` (subdomains only),
//! `10.0.0.?`, `[::1]:8443`, `localhost:5432`. Matching ignores case. A connection is
//! matched by every name it is known by (the CONNECT target, the mapping's host, the SNI).

use std::fmt;
use std::str::FromStr;

/// One host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
    text: String,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| format!("'{text}': {why}");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("expected [ADDRESS]:PORT")),
            }
        } else {
            match text.rsplit_once(':') {
                // More than one colon without brackets: an IPv6 address.
                Some((host, _)) if host.contains(':') => (text, None),
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == ',')
        {
            return Err(bad("a host pattern has no spaces, slashes or commas"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not 1-65535"))?,
            ),
        };
        Ok(HostPattern {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            text: text.to_string(),
        })
    }
}

impl HostPattern {
    /// Parses a comma-separated list, as the flags take it (empty items are skipped).
    pub fn parse_list(list: &str) -> Result<Vec<HostPattern>, String> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect()
    }

    /// True when `host` (any case, brackets around IPv6 allowed) on `port` matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        glob(self.host.as_bytes(), host.as_bytes())
    }
}

/// `*` and `?` matching, iterative (no backtracking blow-up).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What the flags say about interception.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterceptPolicy {
    /// `--intercept-tls`: every host not ignored.
    pub all: bool,
    /// `--intercept-hosts`: these hosts (besides `all`).
    pub only: Vec<HostPattern>,
    /// `--ignore-hosts`: never these.
    pub never: Vec<HostPattern>,
}

impl InterceptPolicy {
    /// True when anything may be intercepted at all (a CA is needed).
    pub fn enabled(&self) -> bool {
        self.all || !self.only.is_empty()
    }

    /// Whether a connection known by `names` on `port` is intercepted.
    pub fn intercepts<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
        port: u16,
    ) -> bool {
        let any = |patterns: &[HostPattern]| {
            names
                .clone()
                .into_iter()
                .any(|n| patterns.iter().any(|p| p.matches(n, port)))
        };
        self.enabled() && !any(&self.never) && (self.all || any(&self.only))
    }

    /// True when some connection known by `names` on `port` may be intercepted, whatever
    /// name its client will send: only `--ignore-hosts` matching those names rules it out.
    pub fn may_intercept<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
        port: u16,
    ) -> bool {
        self.enabled()
            && !names
                .into_iter()
                .any(|n| self.never.iter().any(|p| p.matches(n, port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn globs_match_hosts_and_ports() {
        assert!(p("*.example.com").matches("API.Example.com.", 443));
        assert!(!p("*.example.com").matches("example.com", 443));
        assert!(p("10.0.0.?").matches("10.0.0.7", 1));
        assert!(!p("10.0.0.?").matches("10.0.0.17", 1));
        assert!(p("localhost:5432").matches("localhost", 5432));
        assert!(!p("localhost:5432").matches("localhost", 5433));
        assert!(p("[::1]:8443").matches("[::1]", 8443));
        assert!(p("::1").matches("::1", 1));
        assert!(p("a*b*c").matches("aXXbYYc", 1) && !p("a*b*c").matches("aXXbYY", 1));
        assert!(p("*").matches("anything.at.all", 9));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!("".parse::<HostPattern>().is_err());
        assert!("h:0".parse::<HostPattern>().unwrap_err().contains("port"));
        assert!("[::1".parse::<HostPattern>().is_err());
        assert!("a b".parse::<HostPattern>().is_err());
        assert_eq!(HostPattern::parse_list("a, b,,").unwrap().len(), 2);
    }

    #[test]
    fn ignored_hosts_win_over_every_other_rule() {
        let policy = InterceptPolicy {
            all: true,
            only: vec![],
            never: vec![p("pinned.test")],
        };
        assert!(policy.intercepts(["api.test"], 443));
        assert!(!policy.intercepts(["127.0.0.1", "pinned.test"], 443));
        let only = InterceptPolicy {
            all: false,
            only: vec![p("*.corp")],
            never: vec![],
        };
        assert!(only.intercepts(["db.corp"], 5432) && !only.intercepts(["x.test"], 443));
        assert!(!InterceptPolicy::default().intercepts(["a"], 1));
        assert!(only.may_intercept(["x.test"], 443));
    }
}
