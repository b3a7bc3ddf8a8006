//! Opening and closing flows: ids, the flow's dispatch, `flow_start` and `flow_end` events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tapline_core::{
    Dispatch, EventKind, Flow, FlowEnd, FlowStats, Mode, Protocol, Route, Timestamp, TlsInfo,
};

use crate::context::Shared;

/// An open flow: its description and when it started.
pub(crate) struct OpenFlow {
    flow: Arc<Flow>,
    started: Instant,
}

impl OpenFlow {
    /// Opens a flow (with its TLS, when it carried TLS), makes its dispatch and tells the
    /// pipeline (`flow_start`).
    pub(crate) async fn start(
        ctx: &Shared,
        protocol: Protocol,
        route: Route,
        client: SocketAddr,
        server: SocketAddr,
        tls: Option<Arc<TlsInfo>>,
    ) -> (OpenFlow, Dispatch) {
        let ts = Timestamp::now();
        let id = ctx.ids.next_id();
        let mut flow = Flow::new(id, Mode::Proxy, protocol, route, client, server, ts);
        flow.tls = tls;
        let flow = Arc::new(flow);
        let dispatch = ctx.pipeline.dispatch(&flow);
        dispatch.event(ts, EventKind::FlowStart).await;
        let open = OpenFlow {
            flow,
            started: Instant::now(),
        };
        (open, dispatch)
    }

    /// Reports a flow that ended before carrying anything (`flow_start`, then `flow_end`
    /// with `end`): a refused upstream, a failed handshake.
    pub(crate) async fn failed(
        ctx: &Shared,
        protocol: Protocol,
        route: Route,
        client: SocketAddr,
        server: SocketAddr,
        tls: Option<Arc<TlsInfo>>,
        end: FlowEnd,
    ) {
        let (open, dispatch) = OpenFlow::start(ctx, protocol, route, client, server, tls).await;
        open.end(&dispatch, FlowStats::default(), end).await;
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
