//! Bare WebSocket connections, for tests of what the typed [`crate::Client`]
//! never sends: silence instead of `hello`, a wrong subprotocol, binary or
//! oversized frames, and close codes seen frame by frame.
//!
//! [`RawSession`] is the same over either transport (the URL selects it, as
//! for [`crate::Client`]): messages as they are, no `hello`, the close code.
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

use crate::client::{open_ws, wt_dial};
use crate::error::{CloseInfo, Error, from_ws};
use crate::options::{Options, SUBPROTOCOL};
use crate::transport::{Incoming, Outgoing, Transport};
use crate::{ws, wt};
use futures_util::stream::BoxStream;
use futures_util::{Sink, SinkExt, StreamExt};
use pantheon_protocol::{ClientMessage, Received, decode_server, encode_client};
use std::pin::Pin;
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
            trust: crate::tls::Trust {
                cert_hashes: &[],
                insecure: false,
            },
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

type BoxSink = Pin<Box<dyn Sink<Outgoing, Error = Error> + Send>>;

/// A bare session over WebSocket or WebTransport: nothing is sent but what
/// it is told to send (no `hello`), and what comes is read as it comes.
///
/// ```no_run
/// # async fn t() -> Result<(), pantheon_client::Error> {
/// use pantheon_client::Options;
/// use pantheon_client::raw::RawSession;
/// let mut s = RawSession::connect_with("https://127.0.0.1:3000/wt", &Options::insecure()).await?;
/// // Send nothing: the server closes with 4001 after HELLO_TIMEOUT_MS.
/// assert_eq!(s.recv_close().await?.code, Some(4001));
/// # Ok(()) }
/// ```
pub struct RawSession {
    transport: Transport,
    sink: BoxSink,
    stream: BoxStream<'static, Result<Incoming, Error>>,
    ended: bool,
}

impl std::fmt::Debug for RawSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSession")
            .field("transport", &self.transport)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl RawSession {
    /// Opens the transport the URL selects, with the connection options of
    /// `options` (subprotocol, `Origin`, certificate trust, read buffer,
    /// `connect_timeout`); sends nothing.
    pub async fn connect_with(url: &str, options: &Options) -> Result<Self, Error> {
        let transport = Transport::of_url(url)?;
        let limit = options.connect_timeout;
        let open = async {
            Ok::<_, Error>(match transport {
                Transport::WebSocket => {
                    let (sink, stream) = open_ws(url, options).await?;
                    (Box::pin(sink) as BoxSink, stream.boxed())
                }
                Transport::WebTransport => {
                    let (sink, stream) = wt::open(url, wt_dial(options)).await?;
                    (Box::pin(sink) as BoxSink, stream.boxed())
                }
            })
        };
        let (sink, stream) = tokio::time::timeout(limit, open)
            .await
            .map_err(|_| Error::Timeout(limit))??;
        Ok(Self {
            transport,
            sink,
            stream,
            ended: false,
        })
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Sends one message as it is: a text frame, or a line (`\n` added).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), Error> {
        self.sink.send(Outgoing::Text(text.into())).await
    }

    /// Sends a protocol message.
    pub async fn send_message(&mut self, message: &ClientMessage) -> Result<(), Error> {
        self.send_text(encode_client(message)).await
    }

    /// Sends bytes that are not a message: a binary frame over WebSocket,
    /// the bytes as they are (no `\n` added) over WebTransport.
    pub async fn send_bytes(&mut self, bytes: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.sink.send(Outgoing::Binary(bytes.into())).await
    }

    /// Closes with a code and reason (see [`crate::Client::close_with`] for
    /// what each code means over WebTransport); read the outcome with
    /// [`Self::recv_close`].
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        let close = Outgoing::Close {
            code,
            reason: reason.to_owned(),
        };
        self.sink.send(close).await
    }

    /// The next message. The end of the connection is [`Error::Closed`]
    /// with its code; a binary frame or undecodable text is
    /// [`Error::Protocol`].
    pub async fn recv_message(&mut self) -> Result<Received, Error> {
        if self.ended {
            return Err(CloseInfo::lost("connection ended").into());
        }
        match self.stream.next().await {
            Some(Ok(Incoming::Text(t))) => decode_server(&t)
                .map_err(|e| Error::Protocol(format!("{e}: {}", String::from_utf8_lossy(&t)))),
            Some(Ok(Incoming::Binary)) => {
                Err(Error::Protocol("binary frame from the server".into()))
            }
            Some(Ok(Incoming::Closed(info))) => {
                self.ended = true;
                Err(info.into())
            }
            Some(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            None => {
                self.ended = true;
                Err(CloseInfo::lost("connection ended without a close").into())
            }
        }
    }

    /// Reads until the connection ends, skipping messages; its close code
    /// and reason (`code: None` when it was lost without one).
    pub async fn recv_close(&mut self) -> Result<CloseInfo, Error> {
        loop {
            match self.recv_message().await {
                Ok(_) | Err(Error::Protocol(_)) => {}
                Err(Error::Closed { code, reason }) => return Ok(CloseInfo { code, reason }),
                Err(e) => return Err(e),
            }
        }
    }
}

/// One final client WebSocket frame with `opcode`, masked with a zero key
/// (so the payload goes as it is), for writing the wire by hand: partial
/// frames, invalid UTF-8, floods.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        f.push(0x80 | 126);
        f.extend_from_slice(&len.to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) that accepts any
/// server certificate, still checking that the server holds its key: for
/// tests and load tools that open QUIC or TLS connections by hand.
pub fn insecure_tls_config() -> rustls::ClientConfig {
    crate::tls::client_config(crate::tls::Trust {
        cert_hashes: &[],
        insecure: true,
    })
    .expect("ring supports the default protocol versions")
}

#[cfg(test)]
mod frame_tests {
    use super::ws_frame;

    #[test]
    fn lengths_use_the_shortest_encoding_and_a_zero_mask() {
        assert_eq!(ws_frame(0x1, b"hi"), [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        let mid = ws_frame(0x2, &[7; 300]);
        assert_eq!(&mid[..8], &[0x82, 0xFE, 0x01, 0x2C, 0, 0, 0, 0]);
        assert_eq!(mid.len(), 8 + 300);
        let big = ws_frame(0x1, &vec![0; 70_000]);
        assert_eq!(&big[..2], &[0x81, 0xFF]);
        assert_eq!(&big[2..10], &70_000u64.to_be_bytes());
        assert_eq!(big.len(), 14 + 70_000);
    }
}
