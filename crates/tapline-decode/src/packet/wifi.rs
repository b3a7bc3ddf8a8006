//! IEEE 802.11 data frames and the radio headers captures put in front of them (radiotap,
//! Prism, AVS), as far as the LLC/SNAP EtherType. Management and control frames, frames
//! without a body and protected (encrypted) frames are not IP for tapline.

use super::link::{be16, by_ethertype, le16, Network};

/// An 802.11 frame (no radio header).
pub(crate) fn ieee80211(frame: &[u8]) -> Network<'_> {
    data_frame(frame, false)
}

/// An 802.11 data frame's body, as far as its EtherType; `padded`: the header is followed
/// by padding to a multiple of 4 bytes (radiotap's data-pad flag).
fn data_frame(frame: &[u8], padded: bool) -> Network<'_> {
    let (Some(&fc0), Some(&fc1)) = (frame.first(), frame.get(1)) else {
        return Network::Malformed;
    };
    let (kind, subtype) = ((fc0 >> 2) & 3, fc0 >> 4);
    // Data frames only; subtypes with bit 2 set carry no body (null data, CF-Ack/Poll only).
    if kind != 2 || subtype & 4 != 0 || fc1 & 0x40 != 0 {
        return Network::NotIp;
    }
    let qos = subtype & 8 != 0;
    let mut header = 24;
    if fc1 & 3 == 3 {
        header += 6; // a fourth address: to and from the distribution system (WDS, mesh)
    }
    if qos {
        // An A-MSDU packs several subframes: not followed.
        if frame.get(header).is_some_and(|b| b & 0x80 != 0) {
            return Network::NotIp;
        }
        header += 2;
        if fc1 & 0x80 != 0 {
            header += 4; // HT control field
        }
    }
    if padded {
        header = header.next_multiple_of(4);
    }
    match frame.get(header..) {
        Some(body) => llc_snap(body),
        None => Network::Malformed,
    }
}

/// An LLC header with a SNAP extension (`AA AA 03`, an OUI, an EtherType).
fn llc_snap(body: &[u8]) -> Network<'_> {
    match (body.get(..3), be16(body, 6), body.get(8..)) {
        (Some([0xaa, 0xaa, 0x03]), Some(ethertype), Some(rest)) => by_ethertype(ethertype, rest, 0),
        (Some(_), _, _) => Network::NotIp,
        _ => Network::Malformed,
    }
}

/// An 802.11 frame behind a radiotap header: its length is in the header; the Flags field,
/// when present, says whether padding aligns the 802.11 header to 32 bits.
pub(crate) fn radiotap(frame: &[u8]) -> Network<'_> {
    let Some(len) = le16(frame, 2) else {
        return Network::Malformed;
    };
    let Some(wlan) = frame.get(usize::from(len)..) else {
        return Network::Malformed;
    };
    data_frame(wlan, radiotap_flags(frame).is_some_and(|f| f & 0x20 != 0))
}

/// The radiotap Flags field (present bit 1), after the TSFT field (bit 0, 8 bytes aligned
/// to 8) and the chain of presence words (bit 31 says another follows).
fn radiotap_flags(frame: &[u8]) -> Option<u8> {
    let first = u32::from_le_bytes(frame.get(4..8)?.try_into().ok()?);
    let mut at = 8;
    let mut word = first;
    while word & 0x8000_0000 != 0 {
        word = u32::from_le_bytes(frame.get(at..at + 4)?.try_into().ok()?);
        at += 4;
    }
    if first & 2 == 0 {
        return None;
    }
    if first & 1 != 0 {
        at = at.next_multiple_of(8) + 8;
    }
    frame.get(at).copied()
}

/// A Prism monitor-mode header (its length at offset 4, host order), or an AVS header
/// when the first word is AVS's magic.
pub(crate) fn prism(frame: &[u8]) -> Network<'_> {
    let Some(word) = frame.get(..4) else {
        return Network::Malformed;
    };
    if u32::from_be_bytes(word.try_into().unwrap_or_default()) & 0xffff_f000 == 0x8021_1000 {
        return avs(frame);
    }
    behind(frame, u32::from_le_bytes)
}

/// An AVS header: version magic, then its length (network order) at offset 4.
pub(crate) fn avs(frame: &[u8]) -> Network<'_> {
    behind(frame, u32::from_be_bytes)
}

/// The 802.11 frame behind a radio header whose length is the word at offset 4, read with
/// `word` (Prism and AVS differ in byte order).
fn behind(frame: &[u8], word: fn([u8; 4]) -> u32) -> Network<'_> {
    let len = frame
        .get(4..8)
        .map(|b| word(b.try_into().unwrap_or_default()));
    match len.and_then(|len| frame.get(len as usize..)) {
        Some(wlan) => ieee80211(wlan),
        None => Network::Malformed,
    }
}
