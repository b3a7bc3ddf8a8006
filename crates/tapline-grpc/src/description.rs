//! What a plugin says about itself: `GetPluginInfo` plus `GetPluginCapabilities`.

use std::fmt;

use crate::proto::get_plugin_capabilities_response::SupportedProtocol;
use crate::proto::get_plugin_info_response::{Direction, Side};
use crate::proto::{GetPluginCapabilitiesResponse, GetPluginInfoResponse};

/// A plugin's metadata and capabilities, as fetched at start-up or when it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    /// The address tapline talks to (`http://HOST:PORT`).
    pub address: String,
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Who wrote it.
    pub author: String,
    /// Where it comes from.
    pub url: String,
    /// What it runs on (`python`, `rust`, …).
    pub platform: String,
    /// The proxy leg it works on.
    pub side: Side,
    /// Which way of that leg.
    pub direction: Direction,
    /// What traffic it wants.
    pub capabilities: Capabilities,
}

/// Which traffic a plugin wants (`GetPluginCapabilitiesResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Forward-proxy and HTTP-mapping requests and responses.
    pub http_forward: bool,
    /// `CONNECT` tunnel bytes, and mapping bytes of any protocol when `protocols` is empty.
    pub tunnel: bool,
    /// Mapping protocols whose bytes it wants; unknown values are left out.
    pub protocols: Vec<SupportedProtocol>,
    /// Decoded PostgreSQL messages (`ProcessMessage`, tapline's extension).
    pub messages: bool,
}

impl Capabilities {
    /// True when the plugin named no protocol (or only `NONE`): it takes any mapping's bytes
    /// if it handles tunnels.
    pub fn any_protocol(&self) -> bool {
        self.protocols.iter().all(|p| *p == SupportedProtocol::None)
    }
}

impl PluginDescription {
    /// Builds a description from the two answers. Out-of-range enum values fall back to the
    /// protocol's defaults (`CLIENT`, `INGRESS`) or are dropped (protocols).
    pub(crate) fn from_answers(
        address: &str,
        info: GetPluginInfoResponse,
        capabilities: GetPluginCapabilitiesResponse,
    ) -> Self {
        let side = info.side();
        let direction = info.direction();
        let protocols = capabilities
            .protocols
            .iter()
            .filter_map(|p| SupportedProtocol::try_from(*p).ok())
            .collect();
        PluginDescription {
            address: address.to_string(),
            name: info.name,
            version: info.version,
            author: info.author,
            url: info.url,
            platform: info.platform,
            side,
            direction,
            capabilities: Capabilities {
                http_forward: capabilities.can_handle_http_forward,
                tunnel: capabilities.can_handle_tunnel,
                protocols,
                messages: capabilities.can_handle_messages,
            },
        }
    }
}

impl fmt::Display for PluginDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        let name = if self.name.is_empty() {
            "(unnamed)"
        } else {
            &self.name
        };
        writeln!(f, "{name} {}", or_dash(&self.version))?;
        writeln!(f, "  address:      {}", self.address)?;
        writeln!(f, "  author:       {}", or_dash(&self.author))?;
        writeln!(f, "  url:          {}", or_dash(&self.url))?;
        writeln!(f, "  platform:     {}", or_dash(&self.platform))?;
        writeln!(f, "  side:         {}", lower(self.side.as_str_name()))?;
        writeln!(f, "  direction:    {}", lower(self.direction.as_str_name()))?;
        write!(f, "  capabilities: {}", self.capabilities)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.http_forward {
            parts.push("http-forward".to_string());
        }
        if self.tunnel {
            parts.push("tunnel".to_string());
        }
        if self.messages {
            parts.push("messages".to_string());
        }
        let protocols = if self.any_protocol() {
            if self.tunnel { "any" } else { "none" }.to_string()
        } else {
            self.protocols
                .iter()
                .filter(|p| **p != SupportedProtocol::None)
                .map(|p| lower(p.as_str_name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(format!("protocols: {protocols}"));
        f.write_str(&parts.join("; "))
    }
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(side: i32, protocols: Vec<i32>) -> PluginDescription {
        PluginDescription::from_answers(
            "http://127.0.0.1:1",
            GetPluginInfoResponse {
                name: "EchoPlugin".into(),
                version: "1.0.0".into(),
                author: "Jo".into(),
                url: "https://example.invalid/echo".into(),
                platform: "python".into(),
                direction: 2,
                side,
            },
            GetPluginCapabilitiesResponse {
                can_handle_http_forward: true,
                can_handle_tunnel: true,
                protocols,
                can_handle_messages: false,
            },
        )
    }

    #[test]
    fn display_names_every_field() {
        let text = describe(1, vec![]).to_string();
        for want in [
            "EchoPlugin 1.0.0",
            "http://127.0.0.1:1",
            "Jo",
            "https://example.invalid/echo",
            "python",
            "side:         server",
            "direction:    both",
            "http-forward; tunnel; protocols: any",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn unknown_enum_values_fall_back() {
        let d = describe(77, vec![3, 42, 1]);
        assert_eq!(d.side, Side::Client);
        assert_eq!(
            d.capabilities.protocols,
            [SupportedProtocol::Postgresql, SupportedProtocol::Http]
        );
        assert!(!d.capabilities.any_protocol());
        assert!(d.to_string().contains("protocols: postgresql, http"));
    }
}
