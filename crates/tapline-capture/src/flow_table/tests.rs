use tapline_decode::packet::tcp_flags::{ACK, FIN, SYN};

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `secs` seconds of packet time.
fn t(secs: f64) -> Timestamp {
    Timestamp((secs * 1e6) as i64)
}

/// The client and server of test flow `port`, and its key.
fn ends(port: u16) -> (FlowKey, SocketAddr, SocketAddr) {
    let client = SocketAddr::new([10, 0, 0, 1].into(), port);
    let server = addr("10.0.0.2:7000");
    (FlowKey::new(client, server, 6), client, server)
}

/// Opens test flow `port` with a SYN at `ts`, as flow `id` whose state is its id.
fn open(table: &mut FlowTable<u64>, port: u16, id: u64, ts: Timestamp) -> FlowKey {
    let (key, client, server) = ends(port);
    match table.tcp(key, (client, server), SYN, 100, ts) {
        Place::Start {
            opening,
            replaced: None,
        } => table.insert(key, FlowId(id), opening, id),
        other => panic!("{other:?}"),
    }
    key
}

/// The endings as (state, end, time).
/// Every open flow ended as the end of a capture ends them.
fn end_all(table: &mut FlowTable<u64>) -> Vec<Ending<u64>> {
    let keys: Vec<FlowKey> = table.open_keys().collect();
    keys.iter()
        .filter_map(|k| table.remove(k, FlowEnd::Shutdown))
        .collect()
}

fn summary(endings: Vec<Ending<u64>>) -> Vec<(u64, &'static str, Timestamp)> {
    endings
        .into_iter()
        .map(|e| (e.state, e.end.as_str(), e.at))
        .collect()
}

#[test]
fn key_is_direction_free() {
    let a = addr("10.0.0.1:40000");
    let b = addr("10.0.0.2:80");
    assert_eq!(FlowKey::new(a, b, 6), FlowKey::new(b, a, 6));
    assert_ne!(FlowKey::new(a, b, 6), FlowKey::new(a, b, 17));
    assert!(FlowKey::new(b, a, 6).is_low(a));
    assert!(!FlowKey::new(a, b, 6).is_low(b));
}

#[test]
fn client_guess_prefers_known_ports_then_lower_port_as_server() {
    let c = addr("10.0.0.1:40000");
    assert_eq!(guess_client(addr("10.0.0.2:5432"), c), c);
    assert_eq!(guess_client(c, addr("10.0.0.2:5432")), c);
    assert_eq!(guess_client(addr("10.0.0.2:7777"), c), c);
    assert_eq!(
        guess_client(addr("10.0.0.2:5432"), addr("10.0.0.1:80")),
        addr("10.0.0.2:5432")
    );
}

#[test]
fn sweeps_end_idle_flows_in_packet_time_and_id_order() {
    let mut table = FlowTable::new(Duration::from_secs(2), 100);
    assert!(
        table.advance(t(0.0)).is_empty(),
        "the first packet sets the clock"
    );
    open(&mut table, 40002, 2, t(0.0));
    open(&mut table, 40001, 1, t(0.0));
    let kept = open(&mut table, 40003, 3, t(0.0));
    open(&mut table, 40004, 4, t(1.5));
    assert!(table.advance(t(1.0)).is_empty(), "idle for 1 s only");
    let (_, client, server) = ends(40003);
    assert!(matches!(
        table.tcp(kept, (client, server), ACK, 101, t(2.0)),
        Place::Open
    ));
    // A clock that goes back (reordered capture) does not move the table's.
    assert!(table.advance(t(0.5)).is_empty());
    assert_eq!(
        summary(table.advance(t(2.5))),
        [(1, "timeout", t(0.0)), (2, "timeout", t(0.0))]
    );
    assert_eq!(table.len(), 2);
    assert!(
        table.advance(t(3.4)).is_empty(),
        "no sweep due before 3.5 s"
    );
    assert_eq!(
        summary(table.advance(t(3.6))),
        [(4, "timeout", t(1.5))],
        "the touched flow stays"
    );
    assert_eq!(summary(table.advance(t(4.6))), [(3, "timeout", t(2.0))]);
    assert_eq!(table.len(), 0);
}

#[test]
fn ended_flows_absorb_stragglers_then_are_forgotten() {
    let mut table = FlowTable::new(Duration::from_secs(120), 100);
    table.advance(t(0.0));
    let key = open(&mut table, 40000, 1, t(0.0));
    let (_, client, server) = ends(40000);
    assert_eq!(
        summary(table.close(&key, FlowEnd::Fin).into_iter().collect()),
        [(1, "fin", t(0.0))]
    );
    assert!(table.close(&key, FlowEnd::Rst).is_none(), "ends once");
    assert!(table.open_mut(&key).is_none());
    // The last ACK, even a late FIN: loose packets, not a new flow.
    for (flags, ts) in [(ACK, 1.0), (FIN | ACK, 2.0)] {
        assert!(matches!(
            table.tcp(key, (client, server), flags, 105, t(ts)),
            Place::Straggler
        ));
    }
    assert!(table.advance(t(31.0)).is_empty());
    assert_eq!(table.len(), 1, "the straggler kept it 30 s more");
    table.advance(t(32.0));
    assert_eq!(table.len(), 0, "forgotten after the linger");
    // Now the same packet is taken for a flow picked up mid-stream.
    match table.tcp(key, (server, client), ACK, 500, t(33.0)) {
        Place::Start { opening, replaced } => {
            assert!(replaced.is_none());
            assert_eq!((opening.client, opening.server), (client, server));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_syn_after_the_end_starts_a_new_flow() {
    let mut table = FlowTable::new(Duration::from_secs(120), 100);
    let key = open(&mut table, 40000, 1, t(0.0));
    let (_, client, server) = ends(40000);
    table.close(&key, FlowEnd::Rst).unwrap();
    match table.tcp(key, (client, server), SYN, 100, t(1.0)) {
        Place::Start { opening, replaced } => {
            assert!(replaced.is_none(), "the old flow had ended already");
            assert_eq!(opening.client, client);
            assert_eq!(opening.client_isn, Some(100));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(table.len(), 0, "the ended flow is forgotten");
}

#[test]
fn port_reuse_with_a_new_isn_ends_the_old_flow() {
    let mut table = FlowTable::new(Duration::from_secs(120), 100);
    let key = open(&mut table, 40000, 1, t(0.0));
    let (_, client, server) = ends(40000);
    // A retransmitted SYN, the server's SYN-ACK, a server SYN with any sequence number: the
    // same connection.
    for (from, to, flags, seq) in [
        (client, server, SYN, 100),
        (server, client, SYN | ACK, 7000),
        (server, client, SYN, 8000),
        (client, server, ACK, 101),
    ] {
        assert!(matches!(
            table.tcp(key, (from, to), flags, seq, t(1.0)),
            Place::Open
        ));
    }
    match table.tcp(key, (client, server), SYN, 90_000, t(2.0)) {
        Place::Start { opening, replaced } => {
            assert_eq!(
                summary(replaced.into_iter().collect()),
                [(1, "timeout", t(1.0))]
            );
            assert_eq!((opening.client, opening.started), (client, t(2.0)));
            assert_eq!(opening.client_isn, Some(90_000));
            table.insert(key, FlowId(2), opening, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(table.open_mut(&key), Some(&mut 2));
    assert_eq!(table.len(), 1);
}

#[test]
fn a_flow_picked_up_mid_stream_learns_its_isn_from_a_later_syn() {
    let mut table = FlowTable::new(Duration::from_secs(120), 100);
    let (key, client, server) = ends(40000);
    match table.tcp(key, (server, client), ACK, 7000, t(0.0)) {
        Place::Start { opening, .. } => {
            assert_eq!(opening.client, client, "the lower port is the server's");
            assert_eq!(opening.client_isn, None);
            table.insert(key, FlowId(1), opening, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        table.tcp(key, (client, server), SYN, 5, t(1.0)),
        Place::Open
    ));
    assert!(matches!(
        table.tcp(key, (client, server), SYN, 6, t(2.0)),
        Place::Start {
            replaced: Some(_),
            ..
        }
    ));
}

#[test]
fn the_client_is_the_syn_sender_else_the_syn_ack_receiver() {
    let mut table: FlowTable<u64> = FlowTable::new(Duration::from_secs(120), 100);
    let (key, client, server) = ends(40000);
    match table.tcp(key, (server, client), SYN | ACK, 7000, t(0.0)) {
        Place::Start { opening, .. } => {
            assert_eq!((opening.client, opening.server), (client, server));
            assert_eq!(opening.client_isn, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn eviction_forgets_ended_flows_first_then_ends_the_longest_idle() {
    // 192 flows: a full table makes room for a 64th of them (3) at once.
    let mut table = FlowTable::new(Duration::from_secs(3600), 192);
    for id in 1..=192u16 {
        open(&mut table, 40000 + id, u64::from(id), t(f64::from(id)));
    }
    assert_eq!(table.len(), 192);
    // Flow 100 has ended; flow 1 was seen last of all.
    table.close(&ends(40100).0, FlowEnd::Fin).unwrap();
    let (key, client, server) = ends(40001);
    table.tcp(key, (client, server), ACK, 101, t(500.0));
    assert_eq!(
        summary(table.make_room()),
        [(2, "timeout", t(2.0)), (3, "timeout", t(3.0))],
        "the ended flow went first, silently"
    );
    assert_eq!(table.len(), 189);
    assert!(table.make_room().is_empty(), "room enough");
}

#[test]
fn udp_flows_guess_their_client() {
    let mut table = FlowTable::new(Duration::from_secs(120), 100);
    let (dns, client) = (addr("10.0.0.2:53"), addr("10.0.0.1:5353"));
    let key = FlowKey::new(dns, client, 17);
    match table.udp(key, (dns, client), t(0.0)) {
        Place::Start { opening, replaced } => {
            assert!(replaced.is_none());
            assert_eq!((opening.client, opening.server), (client, dns));
            table.insert(key, FlowId(1), opening, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(table.udp(key, (client, dns), t(1.0)), Place::Open));
    assert_eq!(summary(end_all(&mut table)), [(1, "shutdown", t(1.0))]);
}

#[test]
fn the_end_of_capture_ends_open_flows_in_id_order() {
    let mut table = FlowTable::new(Duration::from_secs(120), 100);
    for (port, id) in [(40003, 3), (40001, 1), (40004, 4), (40002, 2)] {
        open(&mut table, port, id, t(0.0));
    }
    table.close(&ends(40004).0, FlowEnd::Fin).unwrap();
    assert_eq!(
        summary(end_all(&mut table)),
        [
            (1, "shutdown", t(0.0)),
            (2, "shutdown", t(0.0)),
            (3, "shutdown", t(0.0))
        ]
    );
    assert_eq!(table.len(), 1, "only the flow that ended before is left");
}
