//! Opening and closing flows: ids, the flow's dispatch, `flow_start` and `flow_end` events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tapline_core::{
    Dispatch, EventKind, Flow, FlowEnd, FlowStats, Mode, Protocol, Route, Timestamp,
};

use crate::context::Shared;

/// An open flow: its description and when it started.
pub(crate) struct OpenFlow {
    flow: Arc<Flow>,
    started: Instant,
}

impl OpenFlow {
    /// Opens a flow, makes its dispatch and tells the pipeline (`flow_start`).
    pub(crate) async fn start(
        ctx: &Shared,
        protocol: Protocol,
        route: Route,
        client: SocketAddr,
        server: SocketAddr,
    ) -> (OpenFlow, Dispatch) {
        let ts = Timestamp::now();
        let id = ctx.ids.next_id();
        let flow = Arc::new(Flow::new(
            id,
            Mode::Proxy,
            protocol,
            route,
            client,
            server,
            ts,
        ));
        let dispatch = ctx.pipeline.dispatch(&flow);
        dispatch.event(ts, EventKind::FlowStart).await;
        let open = OpenFlow {
            flow,
            started: Instant::now(),
        };
        (open, dispatch)
    }

    /// The flow.
    pub(crate) fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// Closes the flow and tells the pipeline (`flow_end` with its totals).
    pub(crate) async fn end(self, dispatch: &Dispatch, stats: FlowStats, end: FlowEnd) {
        let kind = EventKind::FlowEnd {
            stats,
            end,
            duration: self.started.elapsed(),
        };
        dispatch.event(Timestamp::now(), kind).await;
    }
}
