//! Cross-instance routing.
//!
//! The hub serves every room member on this instance itself; it asks the bus
//! only about what lies beyond it. [`Standalone`] is the in-memory bus of a
//! single instance: there is nothing beyond, so nothing is routed and nothing
//! can fail. A Redis implementation plugs in behind the same trait.

use pantheon_protocol::{PeerId, RoomName};
use std::fmt;

/// The state of cross-instance routing, as `/health` and `/ready` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No other instances are configured.
    Standalone,
    /// Routing works.
    Ok,
    /// Routing is broken: cross-instance requests fail with `internal`.
    Down,
}

impl Health {
    /// The `/health` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Ok => "ok",
            Self::Down => "down",
        }
    }
}

/// A directed message could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No instance has this peer in this room.
    #[error("peer not found")]
    NotFound,
    /// Routing is broken right now (answered as `internal`).
    #[error("routing unavailable: {0}")]
    Unavailable(String),
}

/// What the hub needs from other instances.
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    /// Routing health.
    fn health(&self) -> Health;

    /// Delivers an encoded message (without `seq`) to `to`, a member of `room`
    /// hosted elsewhere.
    fn send(&self, room: &RoomName, to: &PeerId, body: &[u8]) -> Result<(), RouteError>;

    /// Delivers an encoded message (without `seq`) to the members of `room`
    /// hosted elsewhere, except `except`.
    fn publish(&self, room: &RoomName, except: &PeerId, body: &[u8]) -> Result<(), RouteError>;
}

/// The bus of a gateway that is the whole system.
#[derive(Debug, Default)]
pub struct Standalone;

impl Bus for Standalone {
    fn health(&self) -> Health {
        Health::Standalone
    }

    fn send(&self, _room: &RoomName, _to: &PeerId, _body: &[u8]) -> Result<(), RouteError> {
        Err(RouteError::NotFound)
    }

    fn publish(&self, _room: &RoomName, _except: &PeerId, _body: &[u8]) -> Result<(), RouteError> {
        Ok(())
    }
}
