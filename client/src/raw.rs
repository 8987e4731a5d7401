//! Bare WebSocket connections, for tests of what the typed [`crate::Client`]
//! never sends: silence instead of `hello`, a wrong subprotocol, binary or
//! oversized frames, and close codes seen frame by frame.
//!
//! ```no_run
//! # async fn t() -> Result<(), pantheon_client::Error> {
//! use pantheon_client::raw::{RawOptions, RawSocket};
//! let mut ws = RawSocket::connect_with("ws://127.0.0.1:3000/ws", &RawOptions::default()).await?;
//! // Send nothing: the server closes with 4001 after HELLO_TIMEOUT_MS.
//! let close = ws.recv_close().await?;
//! assert_eq!(close.code, Some(4001));
//! # Ok(()) }
//! ```

use crate::error::{CloseInfo, Error, from_ws};
use crate::options::SUBPROTOCOL;
use crate::ws;
use futures_util::{SinkExt, StreamExt};
use pantheon_protocol::{ClientMessage, Received, decode_server, encode_client};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;

/// The WebSocket library, for tests that need [`RawSocket::get_mut`].
pub use tokio_tungstenite;

/// The underlying tokio-tungstenite connection.
pub type WebSocket = ws::Conn;

/// How [`RawSocket::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct RawOptions {
    /// Offered in `Sec-WebSocket-Protocol`; default `Some("pantheon.v1")`.
    /// A server that selects none when one was offered fails the upgrade
    /// with [`Error::Handshake`].
    pub subprotocol: Option<String>,
    /// Sent as `Origin`.
    pub origin: Option<String>,
    /// Bounds the TCP connect and the upgrade; default 10 s.
    pub timeout: Duration,
}

impl Default for RawOptions {
    fn default() -> Self {
        Self {
            subprotocol: Some(SUBPROTOCOL.to_owned()),
            origin: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A ping (already answered).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame.
    Close {
        /// Its code; `None` when it carried none.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
}

/// A bare WebSocket connection.
#[derive(Debug)]
pub struct RawSocket {
    conn: ws::Conn,
    subprotocol: Option<String>,
}

impl RawSocket {
    /// Connects with [`RawOptions::default`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, &RawOptions::default()).await
    }

    /// Connects (TCP and upgrade only: nothing is sent after it).
    pub async fn connect_with(url: &str, options: &RawOptions) -> Result<Self, Error> {
        let upgrade = ws::Upgrade {
            subprotocol: options.subprotocol.as_deref(),
            origin: options.origin.as_deref(),
            read_buffer: 16 * 1024,
        };
        let (conn, subprotocol) = tokio::time::timeout(options.timeout, ws::open(url, upgrade))
            .await
            .map_err(|_| Error::Timeout(options.timeout))??;
        Ok(Self { conn, subprotocol })
    }

    /// The subprotocol the server selected.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.conn.send(message).await.map_err(from_ws)
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Message::Text(text.into().into())).await
    }

    /// Sends a protocol message as a text frame.
    pub async fn send_message(&mut self, message: &ClientMessage) -> Result<(), Error> {
        self.send_text(encode_client(message)).await
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.send(Message::Binary(bytes.into().into())).await
    }

    /// Sends a ping.
    pub async fn send_ping(&mut self, payload: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.send(Message::Ping(payload.into().into())).await
    }

    /// Sends a close frame (then read the answer with [`Self::recv_close`]).
    pub async fn send_close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        self.send(Message::Close(Some(frame))).await
    }

    /// The next frame; `None` once the connection has ended after a close
    /// frame. A connection lost without one is [`Error::Closed`] with no
    /// code (or [`Error::Io`]).
    pub async fn recv(&mut self) -> Result<Option<Frame>, Error> {
        use tokio_tungstenite::tungstenite::Error as Ws;
        let frame = match self.conn.next().await {
            None | Some(Err(Ws::ConnectionClosed | Ws::AlreadyClosed)) => return Ok(None),
            Some(Err(e)) => return Err(from_ws(e)),
            Some(Ok(m)) => m,
        };
        Ok(Some(match frame {
            Message::Text(t) => Frame::Text(t.as_str().to_owned()),
            Message::Binary(b) => Frame::Binary(b.to_vec()),
            Message::Ping(p) => Frame::Ping(p.to_vec()),
            Message::Pong(p) => Frame::Pong(p.to_vec()),
            Message::Close(c) => {
                let info = ws::close_info(c);
                Frame::Close {
                    code: info.code,
                    reason: info.reason,
                }
            }
            Message::Frame(_) => return Err(Error::Transport("raw frame from the server".into())),
        }))
    }

    /// [`Self::recv`] within `limit`, else [`Error::Timeout`].
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Option<Frame>, Error> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| Error::Timeout(limit))?
    }

    /// The next protocol message (skipping pings and pongs). A close frame
    /// or the end of the connection is [`Error::Closed`]; a binary frame or
    /// undecodable text is [`Error::Protocol`].
    pub async fn recv_message(&mut self) -> Result<Received, Error> {
        loop {
            match self.recv().await? {
                Some(Frame::Text(t)) => {
                    return decode_server(t.as_bytes())
                        .map_err(|e| Error::Protocol(format!("{e}: {t}")));
                }
                Some(Frame::Binary(_)) => {
                    return Err(Error::Protocol("binary frame from the server".into()));
                }
                Some(Frame::Ping(_) | Frame::Pong(_)) => {}
                Some(Frame::Close { code, reason }) => return Err(Error::Closed { code, reason }),
                None => return Err(CloseInfo::lost("connection ended").into()),
            }
        }
    }

    /// Reads until the close frame and returns its code and reason,
    /// skipping every other frame. A connection that ends without a close
    /// frame gives `code: None`.
    pub async fn recv_close(&mut self) -> Result<CloseInfo, Error> {
        loop {
            match self.recv().await {
                Ok(Some(Frame::Close { code, reason })) => return Ok(CloseInfo { code, reason }),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(CloseInfo::lost("connection ended without a close frame")),
                Err(Error::Closed { code, reason }) => return Ok(CloseInfo { code, reason }),
                Err(e) => return Err(e),
            }
        }
    }

    /// The underlying tokio-tungstenite stream, for anything else.
    pub fn get_mut(&mut self) -> &mut WebSocket {
        &mut self.conn
    }

    /// Gives the underlying stream up.
    pub fn into_inner(self) -> WebSocket {
        self.conn
    }
}
