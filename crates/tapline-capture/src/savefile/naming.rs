//! The names of the `-w` files, as tcpdump gives them.
//!
//! - No `-C`: the `-w` name itself (with `-G`, strftime-expanded at each file).
//! - `-C` alone: `FILE`, then `FILE1`, `FILE2`… (the number follows the name as given, as
//!   tcpdump does: `cap.pcap1`, not `cap1.pcap`).
//! - `-C` with `-W COUNT`: a ring `FILE0` … `FILE{COUNT-1}`, numbers zero-padded to the digits
//!   of `COUNT - 1` (`-W 3`: `0`…`2`; `-W 12`: `00`…`11`), then back to `0`.
//! - `-G`: the name is a strftime pattern (`cap-%Y%m%d-%H%M%S.pcap`) expanded with the local
//!   time (the `TZ` environment variable, else `/etc/localtime`, else UTC) when each file is
//!   opened; with `-C` too, the numbers restart at each new time slot.

use std::ffi::OsString;
use std::fmt::{Display, Write};
use std::path::{Path, PathBuf};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone};

/// How the `-w` name becomes each file's name.
#[derive(Debug, Clone)]
pub(crate) struct Naming {
    /// The `-w` name, as given.
    base: PathBuf,
    /// `-G`: the name as a strftime pattern (checked when built).
    pattern: Option<String>,
    /// `-C`: files of a slot are numbered.
    numbered: bool,
    /// `-W`: the ring's length (numbers wrap at it, padded to its last number's digits).
    ring: Option<u32>,
}

impl Naming {
    /// Names for `-w base`: `numbered` with `-C`, `timed` with `-G`, `ring` with `-W` and `-C`.
    /// Fails (the reason, one line) on a strftime pattern chrono cannot expand.
    pub(crate) fn new(
        base: &Path,
        numbered: bool,
        timed: bool,
        ring: Option<u32>,
    ) -> Result<Naming, String> {
        let pattern = if timed {
            let text = base
                .to_str()
                .ok_or("with -G the name must be UTF-8 (it is a strftime pattern)")?;
            if StrftimeItems::new(text).any(|item| matches!(item, Item::Error)) {
                return Err(format!("{text:?} is not a valid strftime pattern"));
            }
            Some(text.to_string())
        } else {
            None
        };
        Ok(Naming {
            base: base.to_path_buf(),
            pattern,
            numbered,
            ring: ring.filter(|_| numbered),
        })
    }

    /// The file number after `seq` in one time slot: the next, or back to 0 round a ring.
    pub(crate) fn next_seq(&self, seq: u32) -> u32 {
        match self.ring {
            Some(count) if seq + 1 >= count => 0,
            _ => seq + 1,
        }
    }

    /// The name of the file numbered `seq` in the time slot that began `at`.
    pub(crate) fn name<Tz>(&self, at: &DateTime<Tz>, seq: u32) -> PathBuf
    where
        Tz: TimeZone,
        Tz::Offset: Display,
    {
        let mut name: OsString = match &self.pattern {
            Some(pattern) => {
                let mut expanded = String::new();
                // The pattern was checked in `new`, so formatting cannot fail.
                let _ = write!(
                    expanded,
                    "{}",
                    at.format_with_items(StrftimeItems::new(pattern))
                );
                expanded.into()
            }
            None => self.base.clone().into_os_string(),
        };
        let width = self.ring.map_or(0, digits_of_last);
        if self.numbered && (seq > 0 || width > 0) {
            name.push(format!("{seq:0width$}"));
        }
        PathBuf::from(name)
    }

    /// Whether the name has a strftime conversion (`-G` without one rewrites one file).
    pub(crate) fn has_conversions(&self) -> bool {
        self.pattern.as_deref().is_some_and(|p| {
            StrftimeItems::new(p).any(|item| !matches!(item, Item::Literal(_) | Item::Space(_)))
        })
    }
}

/// tcpdump's padding for a ring of `count` files: the digits of its last number, `count - 1`.
fn digits_of_last(count: u32) -> usize {
    let mut last = count.saturating_sub(1);
    let mut digits = 0;
    while last > 0 {
        digits += 1;
        last /= 10;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 22, 5, 9).unwrap()
    }

    fn names(naming: &Naming, n: usize) -> Vec<String> {
        let mut seq = 0;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(naming.name(&at(), seq).display().to_string());
            seq = naming.next_seq(seq);
        }
        out
    }

    #[test]
    fn size_rotation_numbers_after_the_first_file() {
        let naming = Naming::new(Path::new("cap.pcap"), true, false, None).unwrap();
        assert_eq!(
            names(&naming, 4),
            ["cap.pcap", "cap.pcap1", "cap.pcap2", "cap.pcap3"]
        );
    }

    #[test]
    fn a_ring_is_zero_padded_to_its_last_number_and_wraps() {
        let naming = Naming::new(Path::new("r"), true, false, Some(3)).unwrap();
        assert_eq!(names(&naming, 5), ["r0", "r1", "r2", "r0", "r1"]);
        let naming = Naming::new(Path::new("r"), true, false, Some(12)).unwrap();
        let ring = names(&naming, 13);
        assert_eq!(ring[0], "r00");
        assert_eq!(ring[11], "r11");
        assert_eq!(ring[12], "r00");
        // tcpdump: ten files need one digit (0-9), one file none.
        let naming = Naming::new(Path::new("r"), true, false, Some(10)).unwrap();
        assert_eq!(names(&naming, 11)[9..], ["r9", "r0"]);
        let naming = Naming::new(Path::new("r"), true, false, Some(1)).unwrap();
        assert_eq!(names(&naming, 2), ["r", "r"]);
    }

    #[test]
    fn without_size_rotation_the_name_is_kept() {
        let naming = Naming::new(Path::new("/tmp/x.pcap"), false, false, Some(3)).unwrap();
        assert_eq!(names(&naming, 2), ["/tmp/x.pcap", "/tmp/x.pcap"]);
        assert!(!naming.has_conversions());
    }

    #[test]
    fn time_rotation_expands_strftime_patterns() {
        let naming = Naming::new(Path::new("cap-%Y%m%d-%H%M%S.pcap"), false, true, None).unwrap();
        assert!(naming.has_conversions());
        assert_eq!(
            naming.name(&at(), 0),
            PathBuf::from("cap-20261207-220509.pcap")
        );
        let both = Naming::new(Path::new("d/%H%M.pcap"), true, true, Some(3)).unwrap();
        assert_eq!(both.name(&at(), 2), PathBuf::from("d/2205.pcap2"));
        let plain = Naming::new(Path::new("same.pcap"), false, true, None).unwrap();
        assert!(!plain.has_conversions());
        assert_eq!(plain.name(&at(), 0), PathBuf::from("same.pcap"));
        assert_eq!(
            Naming::new(Path::new("100%%-%s"), false, true, None)
                .unwrap()
                .name(&at(), 0),
            PathBuf::from("100%-1796681109")
        );
    }

    #[test]
    fn a_bad_pattern_is_refused() {
        let err = Naming::new(Path::new("cap-%Q.pcap"), false, true, None).unwrap_err();
        assert!(err.contains("strftime"), "{err}");
    }
}
