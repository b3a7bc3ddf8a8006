//! Event export to Redis Streams (redis-server) and `tapline collect` from it; the body is
//! shared with the other broker's tests (`tests/export/`).

mod common;
mod export;

use common::BrokerKind::Redis;

#[test]
fn every_agent_arrives() {
    export::every_agent_arrives(Redis);
}

#[test]
fn broker_loss_loses_nothing() {
    export::broker_loss_loses_nothing(Redis);
}

#[test]
fn unreachable_broker_spools_then_drains() {
    export::unreachable_broker_spools_then_drains(Redis);
}

#[test]
fn bad_flags_exit_2() {
    export::bad_flags_exit_2(Redis);
}
