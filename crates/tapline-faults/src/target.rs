//! Where a fault applies: a leg of the proxied connection (client or server) and a direction
//! on that leg (ingress, egress or both), as lueur/fault names them.
//!
//! The proxy stands between two legs. On the client leg it reads what the client sends
//! (ingress) and writes what goes back to the client (egress); on the server leg it reads
//! what the upstream answers (ingress) and writes what goes to the upstream (egress). So
//! bytes from the client are client-leg ingress and server-leg egress, and bytes from the
//! server are server-leg ingress and client-leg egress.

use std::fmt;
use std::str::FromStr;

use tapline_core::Side;

use crate::FaultError;

/// A leg of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Between the client and the proxy.
    Client,
    /// Between the proxy and the upstream server.
    Server,
}

impl FromStr for Leg {
    type Err = FaultError;
    fn from_str(s: &str) -> Result<Self, FaultError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "client" => Ok(Leg::Client),
            "server" => Ok(Leg::Server),
            _ => Err(FaultError::Invalid(format!(
                "unknown side '{s}' (expected client or server)"
            ))),
        }
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Client => "client",
            Leg::Server => "server",
        })
    }
}

/// Which way on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the proxy reads from the leg's peer.
    Ingress,
    /// What the proxy writes to the leg's peer.
    Egress,
    /// Both ways.
    Both,
}

impl FromStr for Direction {
    type Err = FaultError;
    fn from_str(s: &str) -> Result<Self, FaultError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            "both" => Ok(Direction::Both),
            _ => Err(FaultError::Invalid(format!(
                "unknown direction '{s}' (expected ingress, egress or both)"
            ))),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Both => "both",
        })
    }
}

/// A leg and a direction: the traffic a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The leg.
    pub leg: Leg,
    /// The direction on that leg.
    pub direction: Direction,
}

impl Target {
    /// A target on `leg` in `direction`.
    pub fn new(leg: Leg, direction: Direction) -> Self {
        Target { leg, direction }
    }

    /// Whether bytes sent by `from` cross the targeted leg in a targeted direction.
    pub fn selects(&self, from: Side) -> bool {
        let ingress = matches!(
            (self.leg, from),
            (Leg::Client, Side::Client) | (Leg::Server, Side::Server)
        );
        match self.direction {
            Direction::Both => true,
            Direction::Ingress => ingress,
            Direction::Egress => !ingress,
        }
    }

    /// Whether an HTTP request (client → server) is targeted.
    pub fn selects_request(&self) -> bool {
        self.selects(Side::Client)
    }

    /// Whether an HTTP response (server → client) is targeted.
    pub fn selects_response(&self) -> bool {
        self.selects(Side::Server)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} side, {}", self.leg, self.direction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_and_directions_map_onto_senders() {
        let t = |leg, direction| Target::new(leg, direction);
        assert!(t(Leg::Client, Direction::Ingress).selects(Side::Client));
        assert!(!t(Leg::Client, Direction::Ingress).selects(Side::Server));
        assert!(t(Leg::Client, Direction::Egress).selects(Side::Server));
        assert!(t(Leg::Server, Direction::Ingress).selects(Side::Server));
        assert!(t(Leg::Server, Direction::Egress).selects(Side::Client));
        assert!(t(Leg::Server, Direction::Both).selects(Side::Client));
        assert!(t(Leg::Server, Direction::Both).selects(Side::Server));
    }

    #[test]
    fn names_parse_case_insensitively_and_reject_others() {
        assert_eq!("Server".parse::<Leg>().unwrap(), Leg::Server);
        assert_eq!("EGRESS".parse::<Direction>().unwrap(), Direction::Egress);
        assert!("upstream".parse::<Leg>().is_err());
        assert!("sideways".parse::<Direction>().is_err());
    }
}
