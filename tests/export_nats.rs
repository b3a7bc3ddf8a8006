//! Event export to NATS JetStream (nats-server -js) and `tapline collect` from it; the body is
//! shared with the other broker's tests (`tests/export/`).

mod common;
mod export;

use common::BrokerKind::Nats;

#[test]
fn every_agent_arrives() {
    export::every_agent_arrives(Nats);
}

#[test]
fn broker_loss_loses_nothing() {
    export::broker_loss_loses_nothing(Nats);
}

#[test]
fn unreachable_broker_spools_then_drains() {
    export::unreachable_broker_spools_then_drains(Nats);
}

#[test]
fn bad_flags_exit_2() {
    export::bad_flags_exit_2(Nats);
}
