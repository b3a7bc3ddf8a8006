//! Which flows and events a plugin gets, from its capabilities and the flow's route and
//! protocol, packed in one atomic word so every hook reads it without a lock.

use std::sync::atomic::{AtomicU16, Ordering};

use tapline_core::{Flow, Interest, Protocol, Route, Side};

use crate::description::PluginDescription;
use crate::proto::get_plugin_capabilities_response::SupportedProtocol;
use crate::proto::get_plugin_info_response::Side as PluginSide;

const KNOWN: u16 = 1;
const HTTP_FORWARD: u16 = 1 << 1;
const TUNNEL: u16 = 1 << 2;
const ANY_PROTOCOL: u16 = 1 << 3;
const HTTP: u16 = 1 << 4;
const HTTPS: u16 = 1 << 5;
const POSTGRESQL: u16 = 1 << 6;
const SERVER_LEG: u16 = 1 << 7;
const MESSAGES: u16 = 1 << 8;

/// A plugin's routing facts: capabilities plus the leg its tunnel calls speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routing(u16);

impl Routing {
    /// The routing of a described plugin.
    pub(crate) fn of(description: &PluginDescription) -> Routing {
        let caps = &description.capabilities;
        let mut bits = KNOWN;
        let mut set = |flag: u16, on: bool| {
            if on {
                bits |= flag
            }
        };
        set(HTTP_FORWARD, caps.http_forward);
        set(TUNNEL, caps.tunnel);
        set(MESSAGES, caps.messages);
        set(ANY_PROTOCOL, caps.any_protocol());
        for p in &caps.protocols {
            set(
                match p {
                    SupportedProtocol::Http => HTTP,
                    SupportedProtocol::Https => HTTPS,
                    SupportedProtocol::Postgresql => POSTGRESQL,
                    SupportedProtocol::None => 0,
                },
                true,
            );
        }
        // ANY counts as SERVER.
        set(SERVER_LEG, description.side != PluginSide::Client);
        Routing(bits)
    }

    fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    /// What the plugin gets of `flow`:
    /// - forward-proxy requests/responses, and those of an HTTP mapping (or of HTTP seen in
    ///   capture), when it handles HTTP forwarding;
    /// - the decrypted requests/responses of an intercepted tunnel when it handles HTTP
    ///   forwarding or names HTTPS;
    /// - `CONNECT` tunnel bytes (decrypted when intercepted) when it handles tunnels;
    /// - mapping (and capture) bytes of protocol P when its protocols hold P, or when it named
    ///   no protocol and handles tunnels;
    /// - decoded PostgreSQL messages when it set `can_handle_messages`.
    pub(crate) fn interest(self, flow: &Flow) -> Interest {
        let (http, chunks) = match flow.route {
            Route::Forward => (self.has(HTTP_FORWARD), false),
            Route::Tunnel if flow.protocol == Protocol::Http => {
                (self.has(HTTP_FORWARD) || self.has(HTTPS), false)
            }
            Route::Tunnel => (false, self.has(TUNNEL)),
            Route::Mapping | Route::Capture | Route::Replay => (
                self.has(HTTP_FORWARD) && flow.protocol == Protocol::Http,
                self.wants_protocol(flow.protocol),
            ),
        };
        Interest {
            chunks,
            requests: http,
            responses: http,
            messages: self.has(MESSAGES) && flow.protocol == Protocol::Postgres,
            ..Interest::default()
        }
    }

    fn wants_protocol(self, protocol: Protocol) -> bool {
        let named = match protocol {
            Protocol::Http => HTTP,
            Protocol::Tls => HTTPS,
            Protocol::Postgres => POSTGRESQL,
            Protocol::Tcp | Protocol::Udp => 0,
        };
        self.has(named) || (self.has(ANY_PROTOCOL) && self.has(TUNNEL))
    }

    /// The leg the plugin declared (`ANY` counts as the server leg).
    pub(crate) fn leg(self) -> Side {
        if self.has(SERVER_LEG) {
            Side::Server
        } else {
            Side::Client
        }
    }
}

/// The latest known [`Routing`] of a plugin, readable from any thread without a lock.
#[derive(Debug, Default)]
pub(crate) struct RoutingCell(AtomicU16);

impl RoutingCell {
    /// The routing, once the plugin has been described.
    pub(crate) fn get(&self) -> Option<Routing> {
        let bits = self.0.load(Ordering::Acquire);
        (bits & KNOWN != 0).then_some(Routing(bits))
    }

    /// Records a fresh description's routing.
    pub(crate) fn set(&self, routing: Routing) {
        self.0.store(routing.0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use tapline_core::{FlowId, Mode, Timestamp};

    use super::*;
    use crate::description::Capabilities;
    use crate::proto::get_plugin_info_response::Direction;

    fn plugin(forward: bool, tunnel: bool, protocols: &[SupportedProtocol]) -> Routing {
        Routing::of(&PluginDescription {
            address: String::new(),
            name: String::new(),
            version: String::new(),
            author: String::new(),
            url: String::new(),
            platform: String::new(),
            side: PluginSide::Any,
            direction: Direction::Both,
            capabilities: Capabilities {
                http_forward: forward,
                tunnel,
                protocols: protocols.to_vec(),
                messages: false,
            },
        })
    }

    fn flow(route: Route, protocol: Protocol) -> Flow {
        Flow {
            id: FlowId(1),
            uid: tapline_core::FlowUid::random(),
            mode: Mode::Proxy,
            protocol,
            route,
            client: "127.0.0.1:1".parse().unwrap(),
            server: "127.0.0.1:2".parse().unwrap(),
            started: Timestamp(0),
            tls: None,
        }
    }

    fn wants(r: Routing, route: Route, protocol: Protocol) -> (bool, bool) {
        let i = r.interest(&flow(route, protocol));
        (i.http(), i.chunks)
    }

    #[test]
    fn echo_style_plugin_gets_forward_tunnel_and_every_mapping() {
        let echo = plugin(true, true, &[]);
        assert_eq!(wants(echo, Route::Forward, Protocol::Http), (true, false));
        assert_eq!(wants(echo, Route::Tunnel, Protocol::Tls), (false, true));
        assert_eq!(
            wants(echo, Route::Tunnel, Protocol::Http),
            (true, false),
            "an intercepted tunnel's HTTP goes to the HTTP calls, decrypted"
        );
        assert_eq!(wants(echo, Route::Tunnel, Protocol::Tcp), (false, true));
        assert_eq!(wants(echo, Route::Mapping, Protocol::Tcp), (false, true));
        assert_eq!(
            wants(echo, Route::Mapping, Protocol::Postgres),
            (false, true)
        );
        assert_eq!(wants(echo, Route::Mapping, Protocol::Http), (true, true));
        assert_eq!(echo.leg(), Side::Server);
    }

    #[test]
    fn postgres_plugin_gets_only_postgres_mappings() {
        let pg = plugin(false, false, &[SupportedProtocol::Postgresql]);
        assert_eq!(wants(pg, Route::Mapping, Protocol::Postgres), (false, true));
        assert_eq!(wants(pg, Route::Capture, Protocol::Postgres), (false, true));
        assert_eq!(wants(pg, Route::Mapping, Protocol::Tcp), (false, false));
        assert_eq!(wants(pg, Route::Tunnel, Protocol::Tls), (false, false));
        assert_eq!(wants(pg, Route::Forward, Protocol::Http), (false, false));
    }

    #[test]
    fn named_protocols_map_from_flow_protocols() {
        let web = plugin(
            false,
            true,
            &[SupportedProtocol::Http, SupportedProtocol::Https],
        );
        assert_eq!(wants(web, Route::Mapping, Protocol::Http), (false, true));
        assert_eq!(wants(web, Route::Capture, Protocol::Tls), (false, true));
        assert_eq!(wants(web, Route::Mapping, Protocol::Tcp), (false, false));
        // Only NONE named: any protocol, given tunnel support.
        let none = plugin(false, true, &[SupportedProtocol::None]);
        assert_eq!(wants(none, Route::Mapping, Protocol::Tcp), (false, true));
        let no_tunnel = plugin(true, false, &[]);
        assert_eq!(
            wants(no_tunnel, Route::Mapping, Protocol::Tcp),
            (false, false)
        );
    }

    #[test]
    fn the_cell_is_empty_until_set() {
        let cell = RoutingCell::default();
        assert_eq!(cell.get(), None);
        let r = plugin(true, false, &[]);
        cell.set(r);
        assert_eq!(cell.get(), Some(r));
    }
}
