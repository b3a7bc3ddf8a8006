//! Link layers and tunnels: the first byte picks one of every link type tapline decodes;
//! the rest is one frame, decoded and steered. Invariants: decoding and steering agree on
//! what is a fragment, and a fragment handed back lies inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapline_decode::packet::{decode, steer, Decoded, LinkType, Steer};

const LINKS: [i32; 13] = [1, 0, 108, 101, 113, 276, 105, 127, 119, 163, 239, 9, 51];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType::from_linktype(LINKS[usize::from(pick) % LINKS.len()]).unwrap();
    let decoded = decode(link, frame);
    if let Decoded::Ip(ip) = decoded {
        let _ = (ip.transport.name(), ip.transport.ports(), ip.transport.payload());
    }
    match steer(link, frame) {
        Steer::Fragment(ip) => {
            assert_eq!(decoded, Decoded::Fragment, "steer and decode disagree");
            let (start, end) = (frame.as_ptr() as usize, frame.as_ptr() as usize + frame.len());
            assert!(ip.as_ptr() as usize >= start && ip.as_ptr() as usize + ip.len() <= end);
        }
        Steer::Flow(_) => assert_ne!(decoded, Decoded::Fragment, "steer and decode disagree"),
    }
});
