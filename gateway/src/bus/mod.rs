//! Cross-instance routing.
//!
//! The hub serves every room member on this instance itself and keeps a view
//! of the members elsewhere; it asks the bus only about what lies beyond this
//! instance, and the bus tells the hub what happened elsewhere through a
//! stream of [`Event`]s. [`Standalone`] is the bus of a single instance:
//! there is nothing beyond, so nothing is routed and nothing can fail.
//! [`redis::Redis`] connects any number of instances through Redis.

pub mod redis;
pub mod wire;

use bytes::Bytes;
use pantheon_protocol::{LeaveReason, Meta, PeerId, RoomName};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so the bus stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// A message could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No instance has this peer in this room.
    #[error("peer not found")]
    NotFound,
    /// Routing is broken right now (answered as `internal`).
    #[error("routing unavailable: {0}")]
    Unavailable(String),
}

/// Where a member served by another instance lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Remote {
    /// The instance's `SERVER_ID`.
    pub server: Arc<str>,
    /// Its `SERVER_REGION`.
    pub region: Arc<str>,
}

/// A room member served by another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    /// The member.
    pub peer: PeerId,
    /// Its meta in the room.
    pub meta: Meta,
    /// Its instance.
    pub at: Remote,
}

/// A membership change of a peer on this instance, for the others.
#[derive(Debug, Clone)]
pub enum Change {
    /// Joined, changed meta, or moved here (a resume from elsewhere).
    Member {
        /// The room.
        room: RoomName,
        /// The peer.
        peer: PeerId,
        /// Its meta.
        meta: Meta,
    },
    /// Left the room.
    Left {
        /// The room.
        room: RoomName,
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
}

/// What another instance did, for this one's hub.
#[derive(Debug, Clone)]
pub enum Event {
    /// A member elsewhere joined, changed meta, or moved.
    Member {
        /// The room.
        room: RoomName,
        /// The member.
        member: RemoteMember,
    },
    /// A member elsewhere left.
    Left {
        /// The room.
        room: RoomName,
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A message for a member here.
    Deliver {
        /// The room.
        room: RoomName,
        /// The recipient.
        to: PeerId,
        /// Encoded message, without `seq`.
        body: Bytes,
        /// The sender's region.
        region: Arc<str>,
    },
    /// A room message for every member here except `from`.
    Broadcast {
        /// The room.
        room: RoomName,
        /// The sender.
        from: PeerId,
        /// Encoded message, without `seq`.
        body: Bytes,
        /// The sender's region.
        region: Arc<str>,
    },
    /// Another instance resumes a session of ours: hand it over.
    Takeover {
        /// The session.
        peer: PeerId,
        /// The client's last seen `seq`.
        last_seq: u64,
        /// The instance asking.
        requester: Arc<str>,
    },
    /// A client of another instance connected under the id of a session
    /// of ours that the transport named (a legacy `deviceId`): end it.
    Evict {
        /// The session.
        peer: PeerId,
        /// The instance asking.
        requester: Arc<str>,
    },
    /// Directed messages kept in the inbox of a session served here while
    /// this instance had no subscription (a reconnect, a failover), oldest
    /// first: delivered before anything that came after.
    Inbox {
        /// The recipient.
        to: PeerId,
        /// Encoded messages, without `seq`.
        bodies: Vec<Bytes>,
    },
    /// The full membership of a watched room as Redis has it now.
    Resync {
        /// The room.
        room: RoomName,
        /// Its members elsewhere.
        members: Vec<RemoteMember>,
    },
}

/// An instance as the directory lists it: where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// Its `SERVER_ID`.
    pub server: String,
    /// Its `SERVER_REGION`.
    pub region: String,
    /// Its `PUBLIC_WS_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// Its `PUBLIC_WT_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wt_url: Option<String>,
}

/// A session handed over by the instance that served it.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The session's secret, as registered.
    pub secret: String,
    /// Messages after the client's `last_seq`, already numbered.
    pub lines: Vec<Bytes>,
    /// Messages that arrived for the session while no instance served it,
    /// not yet numbered.
    pub inbox: Vec<Bytes>,
    /// The `seq` the next message gets, before `inbox` is numbered.
    pub next_seq: u64,
    /// The session's rooms and its meta in each.
    pub rooms: Vec<(RoomName, Meta)>,
}

/// The answer to a [`Event::Takeover`].
#[derive(Debug, Clone)]
pub enum Handover {
    /// The session, with what the client has not seen.
    Session(Claim),
    /// It cannot be resumed without a gap (or is gone); it has ended.
    Refused,
}

/// Marks the secret of a session whose id the transport named (a legacy
/// `deviceId`): such secrets start with it, and server-made ones are hex
/// and never do, so every instance can tell from the directory which
/// sessions may be replaced by id.
pub const NAMED: char = 'n';

/// Whether `secret` is a transport-named session's ([`NAMED`]).
pub fn is_named(secret: &str) -> bool {
    secret.starts_with(NAMED)
}

/// Whether an id another instance serves is free to open here
/// ([`Bus::evict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// No other live instance serves it (any longer): the session there
    /// ended, or its instance is gone; the other instances have been told
    /// that it left its rooms (this one's hub still has to tell its own
    /// members).
    Free,
    /// Another instance serves it under an id the server chose: it is
    /// never replaced.
    Refused,
    /// It could not be found out (Redis unreachable, or no answer in
    /// time): opening it here may leave a second session under the id
    /// elsewhere until one of them ends.
    Unknown,
}

/// What the hub needs from other instances.
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    /// Routing health.
    fn health(&self) -> Health;

    /// Starts receiving `room`'s events (before the first local member
    /// joins) and answers the members elsewhere.
    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<Vec<RemoteMember>, RouteError>>;

    /// Stops receiving `room`'s events (its last local member left).
    fn unwatch(&self, room: &RoomName);

    /// Tells the other instances about a local membership change; resolves
    /// once it is in Redis. Changes are applied in the order announced;
    /// failures are repaired by the next re-assertion.
    fn announce(&self, change: Change) -> BoxFuture<'_, Result<(), RouteError>>;

    /// Delivers an encoded message (without `seq`) to `to`, a member of
    /// `room` served by `at`. Resolves once the message is in Redis.
    ///
    /// The message is queued when this is called, not when the future is
    /// first polled: messages are routed in the order of the calls, so a
    /// session may keep several in flight and still have them arrive in
    /// order.
    fn send(
        &self,
        at: &Remote,
        room: &RoomName,
        to: &PeerId,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), RouteError>>;

    /// Delivers an encoded message (without `seq`) to the members of `room`
    /// elsewhere, except `from`. Queued when called, like [`Bus::send`].
    fn publish(
        &self,
        room: &RoomName,
        from: &PeerId,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), RouteError>>;

    /// Records a session served here, so it can be resumed anywhere.
    fn register(&self, peer: &PeerId, secret: &str);

    /// Forgets a session that ended.
    fn unregister(&self, peer: &PeerId);

    /// Takes over a session registered elsewhere, for a resume — only when
    /// `secret` is the session's.
    fn claim(&self, peer: &PeerId, secret: &str, last_seq: u64) -> BoxFuture<'_, Option<Claim>>;

    /// Answers a takeover request from `requester`.
    fn hand_over(&self, requester: &str, peer: &PeerId, handover: Handover);

    /// Before a transport-named session (a legacy `deviceId`) opens here
    /// as `peer`: ends the session another live instance serves under that
    /// id, if the transport named that one too, and forgets it everywhere
    /// (its rooms get `peer_left`, reason `left`), so that the id is this
    /// instance's alone. A dead instance's session under the id is
    /// forgotten the same way.
    fn evict(&self, peer: &PeerId) -> BoxFuture<'_, Eviction> {
        let _ = peer;
        Box::pin(async { Eviction::Free })
    }

    /// Answers an [`Event::Evict`] from `requester`: `ok` when the session
    /// ended here (or was not here).
    fn evicted(&self, requester: &str, peer: &PeerId, ok: bool) {
        let _ = (requester, peer, ok);
    }

    /// The live instances as the shared directory last listed them (every
    /// instance refreshes its entry with its heartbeat); `None` without a
    /// directory (standalone) or before it was first read.
    fn instances(&self) -> Option<Vec<Instance>> {
        None
    }
}

/// The bus of a gateway that is the whole system.
#[derive(Debug, Default)]
pub struct Standalone;

impl Bus for Standalone {
    fn health(&self) -> Health {
        Health::Standalone
    }

    fn watch(&self, _room: &RoomName) -> BoxFuture<'_, Result<Vec<RemoteMember>, RouteError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn unwatch(&self, _room: &RoomName) {}

    fn announce(&self, _change: Change) -> BoxFuture<'_, Result<(), RouteError>> {
        Box::pin(async { Ok(()) })
    }

    fn send(
        &self,
        _at: &Remote,
        _room: &RoomName,
        _to: &PeerId,
        _body: Bytes,
    ) -> BoxFuture<'static, Result<(), RouteError>> {
        Box::pin(async { Err(RouteError::NotFound) })
    }

    fn publish(
        &self,
        _room: &RoomName,
        _from: &PeerId,
        _body: Bytes,
    ) -> BoxFuture<'static, Result<(), RouteError>> {
        Box::pin(async { Ok(()) })
    }

    fn register(&self, _peer: &PeerId, _secret: &str) {}

    fn unregister(&self, _peer: &PeerId) {}

    fn claim(&self, _peer: &PeerId, _secret: &str, _last_seq: u64) -> BoxFuture<'_, Option<Claim>> {
        Box::pin(async { None })
    }

    fn hand_over(&self, _requester: &str, _peer: &PeerId, _handover: Handover) {}
}
