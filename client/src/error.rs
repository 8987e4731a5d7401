//! The client's one error type, and how a connection ended.

use pantheon_protocol::{CloseCode, ErrorCode, FieldError};
use std::fmt;
use std::time::Duration;

/// How a connection ended: the close frame's code and reason, or `None` when
/// it ended without one (reset, EOF, [`crate::Client::abort`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloseInfo {
    /// The close code (1000, 4009, ...), `None` without a close frame or when
    /// the frame carried no code.
    pub code: Option<u16>,
    /// The close reason, or a description of how the connection was lost.
    pub reason: String,
}

impl CloseInfo {
    /// A close without a close frame.
    pub(crate) fn lost(reason: impl Into<String>) -> Self {
        Self {
            code: None,
            reason: reason.into(),
        }
    }

    /// The code as a protocol [`CloseCode`], when it is one of them.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.code.and_then(CloseCode::from_u16)
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "closed with {code} {:?}", self.reason),
            None => write!(f, "connection lost ({})", self.reason),
        }
    }
}

impl From<CloseInfo> for Error {
    fn from(info: CloseInfo) -> Self {
        Error::Closed {
            code: info.code,
            reason: info.reason,
        }
    }
}

/// Everything that can go wrong talking to a gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered the request with an `error`.
    #[error("server error {code}: {message}")]
    Server {
        /// `error.code`.
        code: ErrorCode,
        /// `error.message`.
        message: String,
    },
    /// The connection is closed (by either side, or lost).
    #[error("connection closed (code {code:?}): {reason}")]
    Closed {
        /// The close frame's code; `None` when the connection ended without
        /// one.
        code: Option<u16>,
        /// The close frame's reason, or how the connection was lost.
        reason: String,
    },
    /// Connecting (TCP, upgrade, `hello` → `welcome`) or closing took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket upgrade failed: a non-101 answer, or a 101 whose headers
    /// do not match the request (e.g. no subprotocol selected); or the
    /// server rejected the WebTransport CONNECT (wtransport does not tell
    /// the status); or an HTTP request ([`crate::fetch_cert_hash`]) was not
    /// answered 200.
    #[error("handshake failed (HTTP status {status:?}): {message}")]
    Handshake {
        /// The HTTP status the server answered with, when it answered.
        status: Option<u16>,
        /// What was wrong.
        message: String,
    },
    /// A transport-level failure other than I/O (bad WebSocket frame, bad
    /// UTF-8, a QUIC or HTTP/3 error, ...).
    #[error("transport error: {0}")]
    Transport(String),
    /// The server broke the protocol: an undecodable message, a reply of the
    /// wrong type, something other than `welcome` first.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A field given to a typed request is invalid (room name, peer id, meta).
    #[error("invalid field: {0}")]
    Field(#[from] FieldError),
    /// Some other argument is invalid: the URL, `data` that is not JSON.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl Error {
    /// The error code when this is [`Error::Server`].
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The close code when this is [`Error::Closed`] with a close frame.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } => *code,
            _ => None,
        }
    }
}

/// Maps a tungstenite error (handshake or stream) onto [`Error`].
pub(crate) fn from_ws(e: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as Ws;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        Ws::Io(e) => Error::Io(e),
        Ws::Http(resp) => Error::Handshake {
            status: Some(resp.status().as_u16()),
            message: format!("server answered {} instead of 101", resp.status()),
        },
        Ws::HttpFormat(e) => Error::InvalidInput(e.to_string()),
        Ws::Url(e) => Error::InvalidInput(e.to_string()),
        Ws::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Error::Closed {
            code: None,
            reason: "connection reset without a close frame".into(),
        },
        Ws::Protocol(
            e @ (ProtocolError::SecWebSocketSubProtocolError(_)
            | ProtocolError::SecWebSocketAcceptKeyMismatch
            | ProtocolError::MissingConnectionUpgradeHeader
            | ProtocolError::MissingUpgradeWebSocketHeader
            | ProtocolError::WrongHttpVersion
            | ProtocolError::WrongHttpMethod
            | ProtocolError::HandshakeIncomplete),
        ) => Error::Handshake {
            status: None,
            message: e.to_string(),
        },
        Ws::ConnectionClosed | Ws::AlreadyClosed => Error::Closed {
            code: None,
            reason: "connection closed".into(),
        },
        other => Error::Transport(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_info_maps_to_close_codes() {
        let info = CloseInfo {
            code: Some(4009),
            reason: "slow consumer".into(),
        };
        assert_eq!(info.close_code(), Some(CloseCode::SlowConsumer));
        let err = Error::from(info);
        assert_eq!(err.close_code(), Some(4009));
        assert_eq!(err.server_code(), None);
        assert_eq!(CloseInfo::lost("eof").close_code(), None);
    }
}
