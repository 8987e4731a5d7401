//! The seam between a transport and the session: what a transport hands the
//! session (`Inbound`) and what the session asks a transport to send
//! (`Outbound`). WebSocket, WebTransport and legacy adapters all speak these,
//! so the session logic exists once.

use crate::codes::CloseCode;
use bytes::Bytes;

/// One event from a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// One message: a text frame, or an NDJSON line without its `\n`.
    Text(Bytes),
    /// A binary frame (not part of the protocol: answered with `bad_request`).
    Binary,
    /// A keepalive answer or other sign of life that carries no message.
    Alive,
    /// A frame or line over 4 × `max_message_bytes` started: the transport
    /// stops reading; the session closes with 1009.
    TooLarge,
    /// A WebSocket text frame that is not UTF-8: the transport stops
    /// reading; the session closes with 1007.
    NotUtf8,
    /// The client closed the connection. `goodbye` is true for a normal close
    /// (WebSocket 1000, WebTransport code 0), which ends the session at once;
    /// anything else starts the resume grace window.
    Closed {
        /// Whether the close was a deliberate goodbye.
        goodbye: bool,
    },
}

/// One thing for the transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// One encoded message (no trailing newline).
    Text(Bytes),
    /// A transport-level keepalive probe (WebSocket ping); transports with
    /// their own keepalive ignore it.
    Ping,
    /// Close the connection with this code.
    Close(CloseCode),
}
