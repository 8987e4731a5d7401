//! Every message of the protocol as a typed value.
//!
//! Both directions serialize with `#[serde(tag = "type")]`. Decoding goes
//! through [`crate::codec`], which reads a flat envelope first so that an error
//! can still echo the request's `id`, and so that `data` is captured verbatim.

use crate::codes::ErrorCode;
use crate::types::{Data, Limits, Meta, PeerId, RoomName};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u64 = 1;

/// One request from a client: an optional `id` and what is asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientMessage {
    /// Client-chosen request id, echoed by the one reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The request itself.
    #[serde(flatten)]
    pub request: Request,
}

/// What a client asks for (PROTOCOL.md §3–4).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Opens (or resumes) a session; must come first.
    Hello {
        /// Protocol version; absent means 1.
        #[serde(skip_serializing_if = "Option::is_none")]
        v: Option<u64>,
        /// A JWT or the legacy shared key, when auth is on.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The session to resume.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
    },
    /// Joins a room (idempotent; a new `meta` replaces the old).
    Join {
        /// The room.
        room: RoomName,
        /// This peer's meta in the room; `{}` when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<Meta>,
    },
    /// Leaves a room.
    Leave {
        /// The room.
        room: RoomName,
    },
    /// Sends `data` to one member of a room.
    Signal {
        /// The room both peers are in.
        room: RoomName,
        /// The recipient.
        to: PeerId,
        /// Anything: SDP, an ICE candidate, ...
        data: Data,
    },
    /// Sends `data` to every other member of a room.
    Broadcast {
        /// The room.
        room: RoomName,
        /// Anything.
        data: Data,
    },
    /// Replaces this peer's meta in a room.
    Update {
        /// The room.
        room: RoomName,
        /// The new meta.
        meta: Meta,
    },
    /// Lists the other members of a room.
    Peers {
        /// The room.
        room: RoomName,
    },
    /// Asks for a `pong`.
    Ping,
}

impl Request {
    /// The wire `type`.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::Hello { .. } => RequestKind::Hello,
            Self::Join { .. } => RequestKind::Join,
            Self::Leave { .. } => RequestKind::Leave,
            Self::Signal { .. } => RequestKind::Signal,
            Self::Broadcast { .. } => RequestKind::Broadcast,
            Self::Update { .. } => RequestKind::Update,
            Self::Peers { .. } => RequestKind::Peers,
            Self::Ping => RequestKind::Ping,
        }
    }
}

/// The `type` of a request, without its fields (metrics labels, dispatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `hello`
    Hello,
    /// `join`
    Join,
    /// `leave`
    Leave,
    /// `signal`
    Signal,
    /// `broadcast`
    Broadcast,
    /// `update`
    Update,
    /// `peers`
    Peers,
    /// `ping`
    Ping,
}

impl RequestKind {
    /// Every kind, in declaration order.
    pub const ALL: [RequestKind; 8] = [
        Self::Hello,
        Self::Join,
        Self::Leave,
        Self::Signal,
        Self::Broadcast,
        Self::Update,
        Self::Peers,
        Self::Ping,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Signal => "signal",
            Self::Broadcast => "broadcast",
            Self::Update => "update",
            Self::Peers => "peers",
            Self::Ping => "ping",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `hello.resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The `session` token from the earlier `welcome`.
    pub session: String,
    /// The last `seq` the client processed (0 when it saw none).
    pub last_seq: u64,
}

/// One member of a room as listed in `joined` and `peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The member.
    pub peer: PeerId,
    /// Its meta in that room.
    pub meta: Meta,
}

/// Why a peer left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It left, or closed its connection normally.
    Left,
    /// Its connection was lost and the grace window ended.
    Disconnected,
}

/// A STUN/TURN server as given to `RTCPeerConnection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URL(s).
    pub urls: String,
    /// TURN REST API user name (`<expiry>:<peer>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN REST API password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A region of the deployment and where clients reach it, as `GET
/// /regions` and `welcome.regions` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// The region's name (`SERVER_REGION` of its instances).
    pub region: String,
    /// Its public WebSocket URL (`PUBLIC_WS_URL`), when its instances
    /// announce one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// Its public WebTransport URL (`PUBLIC_WT_URL`), when announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wt_url: Option<String>,
    /// Live instances in the region.
    pub instances: u32,
}

/// The server's answer to `hello`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Welcome {
    /// Echo of `hello.id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Protocol version.
    pub v: u64,
    /// This session's peer id.
    pub peer: PeerId,
    /// Opaque resume token.
    pub session: String,
    /// Whether an earlier session was resumed.
    pub resumed: bool,
    /// The instance that answered.
    pub server: String,
    /// Its region.
    pub region: String,
    /// How often the server pings.
    pub heartbeat_ms: u64,
    /// Limits for this session.
    pub limits: Limits,
    /// STUN/TURN servers, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice_servers: Option<Vec<IceServer>>,
    /// The regions of the deployment, sorted by name; present when at
    /// least one region announces a public URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<Region>>,
}

/// Every message the server sends (PROTOCOL.md §3–6).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `hello`; carries no `seq`.
    Welcome(Welcome),
    /// Answer to `join`.
    Joined {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: RoomName,
        /// The other members.
        peers: Vec<PeerInfo>,
    },
    /// Answer to `leave`.
    Left {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: RoomName,
    },
    /// Answer to `signal`, `broadcast`, `update` that carried an `id`.
    Ack {
        /// Echo of the request id.
        id: u64,
    },
    /// Answer to `peers`.
    Peers {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: RoomName,
        /// The other members.
        peers: Vec<PeerInfo>,
    },
    /// Answer to `ping`.
    Pong {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A peer joined a room this session is in.
    PeerJoined {
        /// The room.
        room: RoomName,
        /// The newcomer.
        peer: PeerId,
        /// Its meta.
        meta: Meta,
    },
    /// A peer left a room this session is in.
    PeerLeft {
        /// The room.
        room: RoomName,
        /// Who left.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A member changed its meta.
    PeerUpdated {
        /// The room.
        room: RoomName,
        /// Who changed.
        peer: PeerId,
        /// The new meta.
        meta: Meta,
    },
    /// Data from one peer to this one.
    Signal {
        /// The room.
        room: RoomName,
        /// The sender.
        from: PeerId,
        /// What it sent.
        data: Data,
    },
    /// Data from one peer to the whole room.
    Broadcast {
        /// The room.
        room: RoomName,
        /// The sender.
        from: PeerId,
        /// What it sent.
        data: Data,
    },
    /// The server is going away: resume on another instance.
    Reconnect {
        /// Why (e.g. `draining`).
        reason: String,
        /// How long to wait before reconnecting.
        after_ms: u64,
    },
    /// A request failed.
    Error {
        /// Echo of the failed request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl ServerMessage {
    /// A shorthand for an `error`.
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
        }
    }

    /// The wire `type`.
    pub fn kind(&self) -> ServerKind {
        match self {
            Self::Welcome(_) => ServerKind::Welcome,
            Self::Joined { .. } => ServerKind::Joined,
            Self::Left { .. } => ServerKind::Left,
            Self::Ack { .. } => ServerKind::Ack,
            Self::Peers { .. } => ServerKind::Peers,
            Self::Pong { .. } => ServerKind::Pong,
            Self::PeerJoined { .. } => ServerKind::PeerJoined,
            Self::PeerLeft { .. } => ServerKind::PeerLeft,
            Self::PeerUpdated { .. } => ServerKind::PeerUpdated,
            Self::Signal { .. } => ServerKind::Signal,
            Self::Broadcast { .. } => ServerKind::Broadcast,
            Self::Reconnect { .. } => ServerKind::Reconnect,
            Self::Error { .. } => ServerKind::Error,
        }
    }
}

/// The `type` of a server message, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// `welcome`
    Welcome,
    /// `joined`
    Joined,
    /// `left`
    Left,
    /// `ack`
    Ack,
    /// `peers`
    Peers,
    /// `pong`
    Pong,
    /// `peer_joined`
    PeerJoined,
    /// `peer_left`
    PeerLeft,
    /// `peer_updated`
    PeerUpdated,
    /// `signal`
    Signal,
    /// `broadcast`
    Broadcast,
    /// `reconnect`
    Reconnect,
    /// `error`
    Error,
}

impl ServerKind {
    /// Every kind, in declaration order.
    pub const ALL: [ServerKind; 13] = [
        Self::Welcome,
        Self::Joined,
        Self::Left,
        Self::Ack,
        Self::Peers,
        Self::Pong,
        Self::PeerJoined,
        Self::PeerLeft,
        Self::PeerUpdated,
        Self::Signal,
        Self::Broadcast,
        Self::Reconnect,
        Self::Error,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Ack => "ack",
            Self::Peers => "peers",
            Self::Pong => "pong",
            Self::PeerJoined => "peer_joined",
            Self::PeerLeft => "peer_left",
            Self::PeerUpdated => "peer_updated",
            Self::Signal => "signal",
            Self::Broadcast => "broadcast",
            Self::Reconnect => "reconnect",
            Self::Error => "error",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}
