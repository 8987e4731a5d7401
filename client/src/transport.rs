//! The seam between the client and a transport.
//!
//! A transport is a [`Sink`] of [`Outgoing`] and a [`Stream`] of
//! [`Incoming`]: text messages in, text messages out, and a close code at the
//! end. The WebSocket transport ([`crate::ws`]) maps frames onto it, the
//! WebTransport transport ([`crate::wt`]) NDJSON lines on its bidirectional
//! stream and the session close code; the session logic
//! ([`crate::connection`]) is the same for both.

use crate::error::{CloseInfo, Error};
use bytes::Bytes;
use futures_util::{Sink, Stream};

/// One thing for the transport to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One protocol message (one text frame, one NDJSON line).
    Text(String),
    /// A WebSocket binary frame: never valid protocol, sent only by tests.
    Binary(Vec<u8>),
    /// Close the connection with this code and reason.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// One thing the transport received.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// One protocol message.
    Text(Bytes),
    /// Something that is not protocol (a WebSocket binary frame).
    Binary,
    /// The peer closed the connection; nothing follows.
    Closed(CloseInfo),
}

/// The sending half of a transport.
pub(crate) trait TransportSink:
    Sink<Outgoing, Error = Error> + Send + Unpin + 'static
{
}
impl<T: Sink<Outgoing, Error = Error> + Send + Unpin + 'static> TransportSink for T {}

/// The receiving half of a transport. A stream that ends without
/// [`Incoming::Closed`] means the connection was lost.
pub(crate) trait TransportStream:
    Stream<Item = Result<Incoming, Error>> + Send + Unpin + 'static
{
}
impl<T: Stream<Item = Result<Incoming, Error>> + Send + Unpin + 'static> TransportStream for T {}

/// Which transport a URL selects (PROTOCOL.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `ws://HOST:PORT/ws` (and `wss://`, which this crate cannot open: no
    /// TLS feature of tokio-tungstenite is enabled).
    WebSocket,
    /// `https://HOST:WT_PORT/wt`: WebTransport over HTTP/3 (QUIC, UDP).
    WebTransport,
}

impl Transport {
    /// The transport a URL's scheme selects: `ws://`/`wss://` →
    /// WebSocket, `https://` → WebTransport.
    pub fn of_url(url: &str) -> Result<Self, Error> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ws" | "wss") => Ok(Self::WebSocket),
            Some("https") => Ok(Self::WebTransport),
            _ => Err(Error::InvalidInput(format!(
                "{url}: expected ws:// or wss:// (WebSocket) or https:// (WebTransport)"
            ))),
        }
    }

    /// A short name: `ws` or `wt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::WebTransport => "wt",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WebSocket => "WebSocket",
            Self::WebTransport => "WebTransport",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_selects_the_transport() {
        assert_eq!(
            Transport::of_url("ws://127.0.0.1:3000/ws").unwrap(),
            Transport::WebSocket
        );
        assert_eq!(
            Transport::of_url("WSS://example.org/ws").unwrap(),
            Transport::WebSocket
        );
        assert_eq!(
            Transport::of_url("https://127.0.0.1:3000/wt").unwrap(),
            Transport::WebTransport
        );
        for bad in ["http://127.0.0.1/ws", "127.0.0.1:3000", ""] {
            assert!(matches!(
                Transport::of_url(bad),
                Err(Error::InvalidInput(_))
            ));
        }
    }
}
