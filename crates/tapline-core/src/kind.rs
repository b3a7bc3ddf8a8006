//! [`Kind`]: the kinds of event without their payloads, each with the one name every API uses
//! (JSON `kind`, syslog, metrics labels) and an index for per-kind tables; [`KindSet`] for
//! filters and interests.

use std::fmt;

/// What kind of event happened, without what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A connection opened.
    FlowStart,
    /// A connection closed.
    FlowEnd,
    /// A captured packet.
    Packet,
    /// Raw stream bytes.
    Chunk,
    /// Bytes a capture never saw.
    Gap,
    /// An HTTP request.
    HttpRequest,
    /// An HTTP response.
    HttpResponse,
    /// A decoded application message.
    Message,
    /// A request paired with its answer.
    Transaction,
    /// A plugin's record.
    Record,
    /// A plugin's alert.
    Alert,
}

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; 11] = [
        Kind::FlowStart,
        Kind::FlowEnd,
        Kind::Packet,
        Kind::Chunk,
        Kind::Gap,
        Kind::HttpRequest,
        Kind::HttpResponse,
        Kind::Message,
        Kind::Transaction,
        Kind::Record,
        Kind::Alert,
    ];

    /// How many kinds there are (the length of per-kind tables).
    pub const COUNT: usize = Kind::ALL.len();

    /// The name used in every API (`flow_start`, `http_request`, …).
    pub fn name(self) -> &'static str {
        match self {
            Kind::FlowStart => "flow_start",
            Kind::FlowEnd => "flow_end",
            Kind::Packet => "packet",
            Kind::Chunk => "chunk",
            Kind::Gap => "gap",
            Kind::HttpRequest => "http_request",
            Kind::HttpResponse => "http_response",
            Kind::Message => "message",
            Kind::Transaction => "transaction",
            Kind::Record => "record",
            Kind::Alert => "alert",
        }
    }

    /// The kind's place in [`Kind::ALL`], for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of kinds, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u16);

impl KindSet {
    /// No kind.
    pub const EMPTY: KindSet = KindSet(0);
    /// Every kind.
    pub const ALL: KindSet = KindSet((1 << Kind::COUNT) - 1);

    /// The set of `kinds`.
    pub fn of(kinds: &[Kind]) -> KindSet {
        kinds.iter().fold(KindSet::EMPTY, |set, &k| set.with(k))
    }

    /// This set and `kind`.
    #[must_use]
    pub fn with(self, kind: Kind) -> KindSet {
        KindSet(self.0 | 1 << kind.index())
    }

    /// True when `kind` is in the set.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & 1 << kind.index() != 0
    }

    /// Both sets together.
    #[must_use]
    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    /// True when no kind is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in index order.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |&k| self.contains(k))
    }
}

impl FromIterator<Kind> for KindSet {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        iter.into_iter().fold(KindSet::EMPTY, KindSet::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indexes_round_trip() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("flows"), None);
    }

    #[test]
    fn sets_hold_what_was_put_in() {
        let set = KindSet::of(&[Kind::Alert, Kind::FlowEnd]);
        assert!(set.contains(Kind::Alert) && set.contains(Kind::FlowEnd));
        assert!(!set.contains(Kind::Record));
        assert_eq!(set.iter().collect::<Vec<_>>(), [Kind::FlowEnd, Kind::Alert]);
        assert_eq!(KindSet::ALL.iter().count(), Kind::COUNT);
        assert!(KindSet::EMPTY.is_empty());
    }
}
