//! Opening and closing flows: ids, `flow_start` and `flow_end` events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tapline_core::{
    Event, EventKind, Flow, FlowEnd, FlowIds, FlowStats, Mode, Pipeline, Protocol, Route, Timestamp,
};

/// An open flow: its description and when it started.
pub(crate) struct OpenFlow {
    flow: Arc<Flow>,
    started: Instant,
}

impl OpenFlow {
    /// Opens a flow and tells the pipeline (`flow_start`).
    pub(crate) async fn start(
        pipeline: &Pipeline,
        ids: &FlowIds,
        protocol: Protocol,
        route: Route,
        client: SocketAddr,
        server: SocketAddr,
    ) -> OpenFlow {
        let started = Timestamp::now();
        let flow = Arc::new(Flow {
            id: ids.next_id(),
            mode: Mode::Proxy,
            protocol,
            route,
            client,
            server,
            started,
        });
        pipeline
            .observe(Event::on_flow(&flow, started, EventKind::FlowStart))
            .await;
        OpenFlow {
            flow,
            started: Instant::now(),
        }
    }

    /// The flow.
    pub(crate) fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// Closes the flow and tells the pipeline (`flow_end` with its totals).
    pub(crate) async fn end(self, pipeline: &Pipeline, stats: FlowStats, end: FlowEnd) {
        let kind = EventKind::FlowEnd {
            stats,
            end,
            duration: self.started.elapsed(),
        };
        pipeline
            .observe(Event::on_flow(&self.flow, Timestamp::now(), kind))
            .await;
    }
}
