//! Error codes (`error.code`) and connection close codes: the one place that
//! names them (PROTOCOL.md §6).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, missing or invalid field.
    BadRequest,
    /// Message over `max_message_bytes`; it was discarded.
    TooLarge,
    /// Over the rate limit; the message was dropped.
    RateLimited,
    /// Missing, invalid or expired token, or the token does not grant the room.
    Unauthorized,
    /// The sender is not a member of the room.
    NotInRoom,
    /// The target peer is not a member of the room.
    PeerNotFound,
    /// The room has `max_room_peers` members already.
    RoomFull,
    /// The sender is in `max_rooms` rooms already.
    TooManyRooms,
    /// `hello.v` is not supported.
    UnsupportedVersion,
    /// The gateway failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (for metrics label pre-registration).
    pub const ALL: [ErrorCode; 10] = [
        Self::BadRequest,
        Self::TooLarge,
        Self::RateLimited,
        Self::Unauthorized,
        Self::NotInRoom,
        Self::PeerNotFound,
        Self::RoomFull,
        Self::TooManyRooms,
        Self::UnsupportedVersion,
        Self::Internal,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::NotInRoom => "not_in_room",
            Self::PeerNotFound => "peer_not_found",
            Self::RoomFull => "room_full",
            Self::TooManyRooms => "too_many_rooms",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Internal => "internal",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closes a connection. The numeric value is the WebSocket close
/// code and the WebTransport application error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The client said goodbye, or the server ends a session on purpose.
    Normal = 1000,
    /// The server is going away (drain) or the page is unloading.
    GoingAway = 1001,
    /// A WebSocket text frame that is not UTF-8 (RFC 6455 §8.1 requires
    /// failing the connection; WebTransport answers such a line with
    /// `bad_request` instead).
    InvalidPayload = 1007,
    /// A frame or line over 4 × `max_message_bytes`.
    TooLarge = 1009,
    /// The server is restarting.
    Restart = 1012,
    /// No `hello` within `HELLO_TIMEOUT_MS`, or something else sent first.
    HelloTimeout = 4001,
    /// `hello.v` is not supported.
    UnsupportedVersion = 4002,
    /// Authentication failed during `hello`.
    Unauthorized = 4003,
    /// Over the rate limit in each of 10 consecutive seconds.
    RateLimited = 4008,
    /// The outbound queue is full: the client does not read fast enough.
    SlowConsumer = 4009,
    /// The session was resumed on another connection.
    TakenOver = 4010,
}

impl CloseCode {
    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// A short reason phrase for the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "going away",
            Self::InvalidPayload => "text frame is not UTF-8",
            Self::TooLarge => "message too large",
            Self::Restart => "restarting",
            Self::HelloTimeout => "hello expected",
            Self::UnsupportedVersion => "unsupported version",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate limit abuse",
            Self::SlowConsumer => "slow consumer",
            Self::TakenOver => "session taken over",
        }
    }

    /// Maps a numeric code back, for clients.
    pub fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1007 => Self::InvalidPayload,
            1009 => Self::TooLarge,
            1012 => Self::Restart,
            4001 => Self::HelloTimeout,
            4002 => Self::UnsupportedVersion,
            4003 => Self::Unauthorized,
            4008 => Self::RateLimited,
            4009 => Self::SlowConsumer,
            4010 => Self::TakenOver,
            _ => return None,
        })
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_u16(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn close_codes_round_trip() {
        for code in [1000, 1001, 1009, 1012, 4001, 4002, 4003, 4008, 4009, 4010] {
            assert_eq!(CloseCode::from_u16(code).unwrap().as_u16(), code);
        }
        assert_eq!(CloseCode::from_u16(4000), None);
    }
}
