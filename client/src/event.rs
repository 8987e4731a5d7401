//! What [`crate::Client::next_event`] yields.

use crate::error::CloseInfo;
use pantheon_protocol::{ServerKind, ServerMessage};

/// A server message that is not the reply to a pending request, or the end
/// of the connection.
///
/// Events are `peer_joined`, `peer_left`, `peer_updated`, `signal`,
/// `broadcast`, `reconnect`, `error`s without a pending `id`, and replies to
/// requests sent without waiting ([`crate::Handle::send`] with an `id`).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One server message.
    Message {
        /// Its `seq` (every message after `welcome` has one).
        seq: Option<u64>,
        /// The message.
        message: ServerMessage,
    },
    /// The connection is closed; this is the last event.
    Closed {
        /// The close frame's code (4001, 4009, 4010, ...), `None` when the
        /// connection was lost without one.
        code: Option<u16>,
        /// The close frame's reason, or how the connection was lost.
        reason: String,
    },
}

impl Event {
    /// The message's `seq`, for [`Event::Message`].
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Message { seq, .. } => *seq,
            Self::Closed { .. } => None,
        }
    }

    /// The message, for [`Event::Message`].
    pub fn message(&self) -> Option<&ServerMessage> {
        match self {
            Self::Message { message, .. } => Some(message),
            Self::Closed { .. } => None,
        }
    }

    /// The message, for [`Event::Message`].
    pub fn into_message(self) -> Option<ServerMessage> {
        match self {
            Self::Message { message, .. } => Some(message),
            Self::Closed { .. } => None,
        }
    }

    /// The message's `type`, for [`Event::Message`].
    pub fn kind(&self) -> Option<ServerKind> {
        self.message().map(ServerMessage::kind)
    }

    /// How the connection ended, for [`Event::Closed`].
    pub fn close_info(&self) -> Option<CloseInfo> {
        match self {
            Self::Closed { code, reason } => Some(CloseInfo {
                code: *code,
                reason: reason.clone(),
            }),
            Self::Message { .. } => None,
        }
    }
}

impl From<CloseInfo> for Event {
    fn from(info: CloseInfo) -> Self {
        Self::Closed {
            code: info.code,
            reason: info.reason,
        }
    }
}
