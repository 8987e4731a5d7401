//! WebSocket transport for the Pantheon gateway.
//!
//! [`Upgrade::check`] vets an upgrade request (subprotocol `pantheon.v1`,
//! `Origin` against the allowed list) and configures frame limits so an
//! oversized frame is refused from its header, before its payload is
//! buffered. [`split`] turns the upgraded [`WebSocket`] into the transport-neutral
//! seam of `pantheon_protocol::transport`: a `Stream` of [`Inbound`] and a
//! `Sink` of [`Outbound`], which the gateway's one session loop drives.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use pantheon_protocol::{Inbound, Outbound};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The subprotocol selected when a client offers it.
pub const SUBPROTOCOL: &str = "pantheon.v1";

/// How the WebSocket transport is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frames (and messages) over this many bytes close the connection with
    /// 1009; the protocol sets it to 4 × `max_message_bytes`.
    pub max_frame_bytes: usize,
    /// When set, only these `Origin`s may connect (exact match, e.g.
    /// `https://app.example.com`). Requests without `Origin` (non-browser
    /// clients) are admitted.
    pub allowed_origins: Option<Vec<String>>,
}

/// Why an upgrade was refused, with the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// HTTP status for the refusal.
    pub status: StatusCode,
    /// What to tell the client (and the metrics label).
    pub reason: &'static str,
}

/// Vets upgrade requests.
#[derive(Debug)]
pub struct Upgrade;

impl Upgrade {
    /// Checks origin and subprotocol and applies the frame limits. On success,
    /// the caller finishes with `on_upgrade`.
    pub fn check(
        ws: WebSocketUpgrade,
        headers: &HeaderMap,
        options: &Options,
    ) -> Result<WebSocketUpgrade, Refused> {
        if let (Some(allowed), Some(origin)) =
            (&options.allowed_origins, headers.get(header::ORIGIN))
        {
            let ok = origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if !ok {
                return Err(Refused {
                    status: StatusCode::FORBIDDEN,
                    reason: "origin not allowed",
                });
            }
        }
        let offered = ws.requested_protocols().count();
        let ws = ws.protocols([SUBPROTOCOL]);
        if offered > 0 && ws.selected_protocol().is_none() {
            // A browser that offered subprotocols fails the handshake when none
            // is selected; say why instead.
            return Err(Refused {
                status: StatusCode::BAD_REQUEST,
                reason: "unsupported subprotocol (offer pantheon.v1 or none)",
            });
        }
        Ok(ws
            // Small buffers keep idle sessions cheap; they grow per message.
            .read_buffer_size(4 * 1024)
            .write_buffer_size(16 * 1024)
            .max_write_buffer_size(options.max_frame_bytes.saturating_mul(4).max(1 << 20))
            .max_frame_size(options.max_frame_bytes)
            .max_message_size(options.max_frame_bytes))
    }
}

/// Splits an upgraded socket into the transport-neutral seam.
pub fn split(socket: WebSocket) -> (Incoming, Outgoing) {
    let (sink, stream) = socket.split();
    (
        Incoming {
            inner: stream,
            done: false,
        },
        Outgoing { inner: sink },
    )
}

/// The client's side of a WebSocket as a stream of [`Inbound`] events. It ends
/// after yielding one [`Inbound::Closed`], [`Inbound::TooLarge`] or
/// [`Inbound::NotUtf8`].
#[derive(Debug)]
pub struct Incoming {
    inner: SplitStream<WebSocket>,
    done: bool,
}

/// What a read error means for the session.
fn on_error(err: axum::Error) -> Inbound {
    match err.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Inbound::TooLarge,
        Some(tungstenite::Error::Utf8(_)) => Inbound::NotUtf8,
        _ => Inbound::Closed { goodbye: false },
    }
}

impl Stream for Incoming {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match ready!(self.inner.poll_next_unpin(cx)) {
            Some(Ok(Message::Text(text))) => Inbound::Text(text.into()),
            Some(Ok(Message::Binary(_))) => Inbound::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Alive,
            Some(Ok(Message::Close(frame))) => {
                self.done = true;
                // A close without a status (1005) is what a browser's plain
                // `ws.close()` sends: a goodbye like 1000.
                Inbound::Closed {
                    goodbye: frame.is_none_or(|f| f.code == 1000),
                }
            }
            Some(Err(err)) => {
                self.done = true;
                on_error(err)
            }
            None => {
                self.done = true;
                Inbound::Closed { goodbye: false }
            }
        };
        Poll::Ready(Some(item))
    }
}

/// The server's side of a WebSocket as a sink of [`Outbound`] items. Items are
/// buffered until `flush`, so a writer can batch many messages per write.
#[derive(Debug)]
pub struct Outgoing {
    inner: SplitSink<WebSocket, Message>,
}

/// The WebSocket connection failed while sending.
#[derive(Debug, thiserror::Error)]
#[error("websocket send failed: {0}")]
pub struct SendError(#[from] axum::Error);

impl Sink<Outbound> for Outgoing {
    type Error = SendError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Pin::new(&mut self.inner).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outbound) -> Result<(), SendError> {
        let msg = match item {
            Outbound::Text(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Message::Text(text),
                // The session only ever encodes JSON from Rust strings.
                Err(_) => return Ok(()),
            },
            Outbound::Ping => Message::Ping(Default::default()),
            Outbound::Close(code) => Message::Close(Some(CloseFrame {
                code: code.as_u16(),
                reason: Utf8Bytes::from_static(code.reason()),
            })),
        };
        Pin::new(&mut self.inner)
            .start_send(msg)
            .map_err(Into::into)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(Into::into)
    }
}
